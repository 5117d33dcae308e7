//! `/exec`: a process in a container, its streams carried over WebSocket channels.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

use super::http::{self, Request};
use super::{ContainerLookup, ExecError, ExecProcess};

pub(super) async fn serve_exec<R, W>(
    _req: &Request,
    _ns: &str,
    _pod: &str,
    _container: &str,
    _lookup: Arc<dyn ContainerLookup>,
    _rd: R,
    mut wr: W,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    http::respond(&mut wr, 400, "text/plain", b"not yet").await
}

/// Runs `command` as a host process (tests, and nodes without a runtime).
pub fn host_exec(_command: Vec<String>, _tty: bool) -> Result<ExecProcess, ExecError> {
    Err(ExecError::Failed("not yet".into()))
}
