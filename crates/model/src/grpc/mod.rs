//! The gRPC form of the protocol: `inference.GRPCInferenceService`, its messages, client and
//! server, generated from `proto/inference/grpc_predict_v2.proto` by `scripts/gen-grpc.sh`
//! (committed, so building needs no protoc), and the conversions between its tensors and
//! [`Values`].

#[allow(missing_docs, clippy::all, clippy::pedantic, clippy::unwrap_used)]
#[rustfmt::skip] // generated; scripts/gen-grpc.sh --check compares it byte for byte
mod inference;

pub use inference::*;

use crate::ProtocolError;
use crate::tensor::DataType;
use crate::values::Values;

/// Message size limit both ways (tritonclient and KServe lift theirs to 2 GiB; tonic's default
/// of 4 MiB would refuse a batch of a few thousand wide rows).
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// Parses a wire datatype name.
pub fn datatype(name: &str) -> Result<DataType, ProtocolError> {
    serde_json::from_value(serde_json::Value::String(name.to_owned()))
        .map_err(|_| ProtocolError::invalid(format!("unknown datatype {name:?}")))
}

/// The wire name of a datatype.
pub fn datatype_name(dt: DataType) -> String {
    serde_json::to_value(dt).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// Elements from typed `contents` (what clients that do not send raw bytes use, and what
/// MLServer answers with when the request was not raw).
pub fn from_contents(dt: DataType, c: &InferTensorContents, shape: &[i64]) -> Result<Values, ProtocolError> {
    let v = match dt {
        DataType::Fp32 => Values::F32(c.fp32_contents.clone()),
        DataType::Fp64 => Values::F64(c.fp64_contents.clone()),
        DataType::Int64 => Values::I64(c.int64_contents.clone()),
        DataType::Int32 => Values::I32(c.int_contents.clone()),
        other => return Err(ProtocolError::invalid(format!("datatype {other:?} is not supported here"))),
    };
    let n = crate::tensor::element_count(shape)?;
    if v.len() != n {
        return Err(ProtocolError::invalid(format!("shape {shape:?} holds {n} elements, contents have {}", v.len())));
    }
    Ok(v)
}

/// Whether typed contents hold any element.
pub fn has_contents(c: &InferTensorContents) -> bool {
    !(c.bool_contents.is_empty()
        && c.int_contents.is_empty()
        && c.int64_contents.is_empty()
        && c.uint_contents.is_empty()
        && c.uint64_contents.is_empty()
        && c.fp32_contents.is_empty()
        && c.fp64_contents.is_empty()
        && c.bytes_contents.is_empty())
}
