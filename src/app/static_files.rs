//! The files embedded in the binary: the page at `/` (a chat and a live dashboard) and
//! `hibiki.js`, the browser and Node client of the app protocol (`docs/client-js.md`).
//!
//! They live in `web/` in the source tree and are compiled in with `include_str!`, so the
//! server needs no file system and the client always matches the server it came from.

use crate::reactor::HttpResponse;

/// One embedded file.
struct File {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const FILES: &[File] = &[
    File { path: "/", content_type: "text/html; charset=utf-8", body: include_str!("../../web/index.html") },
    File {
        path: "/hibiki.js",
        content_type: "application/javascript; charset=utf-8",
        body: include_str!("../../web/hibiki.js"),
    },
    File {
        path: "/app.js",
        content_type: "application/javascript; charset=utf-8",
        body: include_str!("../../web/app.js"),
    },
    File {
        path: "/app.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../../web/app.css"),
    },
];

/// The embedded file at `path` (`/index.html` is `/`), answered to `GET` (405 otherwise);
/// `None` when there is no such file.
pub fn respond(method: &str, path: &str) -> Option<HttpResponse> {
    let path = if path == "/index.html" { "/" } else { path };
    let file = FILES.iter().find(|f| f.path == path)?;
    if method != "GET" {
        return Some(HttpResponse {
            headers: vec![("Allow".into(), "GET".into())],
            ..HttpResponse::text(405, "GET only\n")
        });
    }
    let mut response = HttpResponse::with_type(200, file.content_type, file.body);
    response.headers.push(("Cache-Control".into(), "no-cache".into()));
    response.headers.push(("X-Content-Type-Options".into(), "nosniff".into()));
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_the_client_are_served_with_their_types() {
        let page = respond("GET", "/").unwrap();
        assert_eq!((page.status, page.headers[0].1.as_str()), (200, "text/html; charset=utf-8"));
        assert!(std::str::from_utf8(&page.body).unwrap().contains("/hibiki.js"));
        let js = respond("GET", "/hibiki.js").unwrap();
        assert_eq!(js.headers[0].1, "application/javascript; charset=utf-8");
        assert!(std::str::from_utf8(&js.body).unwrap().contains("export class HibikiClient"));
        assert_eq!(respond("POST", "/hibiki.js").unwrap().status, 405);
        assert!(respond("GET", "/nope.js").is_none());
    }
}
