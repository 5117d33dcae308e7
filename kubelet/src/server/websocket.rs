//! WebSocket framing (RFC 6455), server side.
