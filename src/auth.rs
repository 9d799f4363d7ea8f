//! The operator's credential: the admin bearer token that membership
//! changes, leadership transfers, restores and schedules need, checked by
//! the node an operator calls and again by the leader a change is handed
//! to. Plain logic, no I/O: both listeners use it.

/// The admin token this node was given; none means admin changes are
/// refused.
#[derive(Clone, Debug, Default)]
pub struct AdminToken(Option<String>);

/// The `Authorization` header value of the operator who asked for a change,
/// carried with the change when it is handed to the leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operator(pub String);

impl AdminToken {
    pub fn new(token: Option<String>) -> Self {
        AdminToken(token)
    }

    /// Checks an `Authorization` header against the admin token.
    pub fn check(&self, authorization: Option<&str>) -> Result<(), &'static str> {
        let Some(token) = &self.0 else {
            return Err("admin changes are disabled: no admin token is configured on this node (security.admin_token or DISCOVERY_ADMIN_TOKEN)");
        };
        let Some(given) = authorization.and_then(|h| h.strip_prefix("Bearer ")) else {
            return Err("admin changes need an Authorization: Bearer token");
        };
        if same(given.trim().as_bytes(), token.as_bytes()) {
            Ok(())
        } else {
            Err("wrong admin token")
        }
    }
}

/// Compares in time that does not depend on where the bytes differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_changes_need_the_exact_token() {
        let a = AdminToken::new(Some("s3cret".into()));
        assert!(a.check(Some("Bearer s3cret")).is_ok());
        assert!(a.check(Some("Bearer s3cre")).is_err());
        assert!(a.check(Some("Bearer s3cretX")).is_err());
        assert!(a.check(Some("s3cret")).is_err());
        assert!(a.check(None).is_err());
        let none = AdminToken::new(None);
        assert!(none.check(Some("Bearer ")).is_err());
    }
}
