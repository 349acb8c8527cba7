//! The Open Inference Protocol v2 — the contract KServe, Triton and MLServer share — as tally's
//! model server and model client speak it: tensors ([`tensor`]) and the REST wire format with
//! Triton's binary tensor extension ([`rest`]). What the clients in the field send and expect
//! is in `docs/notes/oip-v2.md`; the gRPC definition is `proto/inference/grpc_predict_v2.proto`.

pub mod batch;
pub mod breaker;
pub mod client;
pub mod grpc;
pub mod rest;
pub mod tensor;
pub mod values;

pub use client::{ModelClient, ScoreConfig, ScoreError, Transport};
pub use rest::{InferRequest, InferResponse, RequestedOutput, Tensor};
pub use tensor::DataType;
pub use values::{Named, Values};

/// A request or response that breaks the protocol (answered 400 with `{"error": …}`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ProtocolError(pub String);

impl ProtocolError {
    pub(crate) fn invalid(detail: impl Into<String>) -> Self {
        Self(detail.into())
    }
}
