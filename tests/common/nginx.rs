//! nginx in front of two nodes, with the configuration `docs/deploy.md` documents (its
//! ports and paths changed), run unprivileged under a directory of its own.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Nginx {
    pub addr: SocketAddr,
    dir: PathBuf,
    child: Child,
}

/// The first ```nginx block of docs/deploy.md.
fn documented() -> String {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/deploy.md")).unwrap();
    let start = doc.find("```nginx\n").expect("an nginx block in docs/deploy.md") + "```nginx\n".len();
    let end = start + doc[start..].find("```").unwrap();
    doc[start..end].to_owned()
}

impl Nginx {
    pub fn start(a: SocketAddr, b: SocketAddr) -> Self {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let dir = std::env::temp_dir().join(format!("hibiki-nginx-{}-{port}", std::process::id()));
        std::fs::create_dir_all(dir.join("logs")).unwrap();
        let d = dir.display();
        let config = documented()
            .replace(
                "worker_processes auto;",
                // One process (no workers to outlive it when the test kills it).
                &format!("master_process off;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;"),
            )
            .replace(
                "http {",
                &format!(
                    "http {{\n    access_log off;\n    client_body_temp_path {d}/body;\n    proxy_temp_path {d}/proxy;\n    fastcgi_temp_path {d}/fastcgi;\n    uwsgi_temp_path {d}/uwsgi;\n    scgi_temp_path {d}/scgi;"
                ),
            )
            .replace("listen 8080;", &format!("listen {addr};"))
            .replace("127.0.0.1:8081", &a.to_string())
            .replace("127.0.0.1:8082", &b.to_string());
        assert!(config.contains(&a.to_string()) && config.contains(&addr.to_string()), "{config}");
        std::fs::write(dir.join("nginx.conf"), config).unwrap();
        let nginx = ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "nginx"]
            .into_iter()
            .find(|p| !p.starts_with('/') || std::path::Path::new(p).exists())
            .unwrap();
        let child = Command::new(nginx)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("these tests run nginx and could not ({e}): apt-get install -y nginx")
            });
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
            assert!(Instant::now() < deadline, "nginx did not listen on {addr}: {log}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { addr, dir, child }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
