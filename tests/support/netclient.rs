//! Clients for the data plane's end-to-end tests: plain HTTP with busybox's nc (its own wget
//! crashes in Debian's static build), from inside a pod or from a host process.

/// A shell function printing the last line of `GET /` from `$1` port `${2:-80}`: the test web
/// pods answer with their name.
pub const GET: &str = "get() { printf 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 3 \"$1\" \"${2:-80}\" | busybox tail -n 1; }; ";

/// Runs `sh -c script` (with [`GET`] defined) in `pod`; its stdout, or its stderr on failure.
pub fn in_pod(server: &crate::common::Server, pod: &str, script: &str) -> Result<String, String> {
    let out = server
        .kubectl()
        .run(&["exec", pod, "--", "sh", "-c", &format!("{GET}{script}")]);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}
