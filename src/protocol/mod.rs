//! The wire protocol of `docs/protocol.md`: frames, requests and responses as values, and their
//! byte layouts. Pure: no I/O, no knowledge of the engine.

pub mod bounds;
pub mod ext;
pub mod frame;
pub mod request;
pub mod response;

pub use bounds::{RequestError, RequestLimits};
pub use frame::{Frame, FrameError, Header};
pub use request::Request;
pub use response::{Response, Status};
