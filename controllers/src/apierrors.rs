//! Which API errors are the usual races of a controller (apimachinery's `errors.IsNotFound`,
//! `IsConflict`, `HasStatusCause(NamespaceTerminatingCause)`): a controller shrugs them off and
//! lets the next watch event bring it back, rather than failing and retrying.

/// 404: the object is already gone.
pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// 409: a conflict — the object already exists, or a precondition (UID, resourceVersion) no
/// longer holds because someone else changed it.
pub fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// 404 or 409: what a delete with a UID precondition, or a create that lost a race, returns
/// when there is nothing left to do.
pub fn is_gone_or_conflict(e: &kube::Error) -> bool {
    is_not_found(e) || is_conflict(e)
}

/// 403 because the namespace is being deleted: creates there fail until it is gone.
pub fn is_namespace_terminating(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 403 && s.message.contains("being terminated"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, message: &str) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure(message, "")
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn classifies_by_code_and_message() {
        assert!(is_not_found(&status(404, "")) && !is_not_found(&status(409, "")));
        assert!(is_conflict(&status(409, "")) && !is_conflict(&status(404, "")));
        assert!(is_gone_or_conflict(&status(404, "")) && is_gone_or_conflict(&status(409, "")));
        assert!(!is_gone_or_conflict(&status(500, "")));
        let terminating = "pods \"x\" is forbidden: unable to create new content in namespace \
                           ns because it is being terminated";
        assert!(is_namespace_terminating(&status(403, terminating)));
        assert!(!is_namespace_terminating(&status(403, "forbidden")));
        assert!(!is_namespace_terminating(&status(500, terminating)));
    }
}
