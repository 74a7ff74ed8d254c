//! Who a client is: a JWT (HS256) from the `Authorization: Bearer` header, a `token` query
//! parameter or a `token` cookie, or, without a secret, an anonymous generated id.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use serde::Deserialize;

use crate::hub::Identity;
use crate::proto::handshake::request::Request;

/// The claims hibiki reads from a token.
#[derive(Debug, Clone, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// A display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Room patterns the user may join (`chat:*`, `user:42`); absent: any room.
    #[serde(default)]
    pub rooms: Option<Vec<String>>,
    /// Expiry (seconds since the epoch); required.
    pub exp: u64,
}

/// Why a request was refused (answered with 401).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthError(pub String);

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AuthError {}

/// The authentication policy.
pub struct Auth {
    key: Option<DecodingKey>,
    validation: Validation,
    anonymous: AtomicU64,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").field("jwt", &self.key.is_some()).finish()
    }
}

impl Auth {
    /// With `secret`, every client needs a valid HS256 token; without, clients are anonymous.
    pub fn new(secret: Option<&str>) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        Self {
            key: secret.map(|s| DecodingKey::from_secret(s.as_bytes())),
            validation,
            anonymous: AtomicU64::new(rand::random::<u32>() as u64),
        }
    }

    /// Whether tokens are required.
    pub fn required(&self) -> bool {
        self.key.is_some()
    }

    /// Authenticates a request.
    ///
    /// # Errors
    ///
    /// [`AuthError`] when a token is required and missing, malformed, badly signed or expired.
    pub fn authenticate(&self, request: &Request<'_, '_>) -> Result<Identity, AuthError> {
        let Some(key) = &self.key else {
            let n = self.anonymous.fetch_add(1, Ordering::Relaxed);
            return Ok(Identity { user: Arc::from(format!("anon-{n:x}")), name: None, rooms: None });
        };
        let token = token_of(request).ok_or_else(|| AuthError("missing token".into()))?;
        let data = decode::<Claims>(&token, key, &self.validation)
            .map_err(|e| AuthError(format!("bad token: {e}")))?;
        let claims = data.claims;
        Ok(Identity { user: Arc::from(claims.sub), name: claims.name, rooms: claims.rooms })
    }
}

/// The token from the header, the `token` query parameter or the `token` cookie.
fn token_of(request: &Request<'_, '_>) -> Option<String> {
    if let Some(token) = request.bearer_token() {
        return Some(token.to_owned());
    }
    if let Some(token) = request.query().and_then(|q| query_param(q, "token")) {
        return Some(token);
    }
    request.cookie("token").map(str::to_owned)
}

/// A query parameter, percent-decoded.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() && s.is_char_boundary(i + 1) && s.is_char_boundary(i + 3) => {
                match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_are_decoded() {
        assert_eq!(query_param("room=chat%3A1&token=a.b.c", "room").as_deref(), Some("chat:1"));
        assert_eq!(query_param("room=chat%3A1&token=a.b.c", "token").as_deref(), Some("a.b.c"));
        assert_eq!(query_param("x=1", "room"), None);
        assert_eq!(query_param("room=%zz", "room").as_deref(), Some("%zz"));
        assert_eq!(query_param("room=a%2", "room").as_deref(), Some("a%2"));
    }

    #[test]
    fn room_access() {
        let id = Identity { user: "42".into(), name: None, rooms: Some(vec!["chat:*".into()]) };
        assert!(id.may_join("chat:lobby"));
        assert!(!id.may_join("game:1"));
        assert!(id.may_join("user:42"));
        assert!(!id.may_join("user:43"));
        let any = Identity { user: "7".into(), name: None, rooms: None };
        assert!(any.may_join("game:1") && !any.may_join("user:42"));
    }
}
