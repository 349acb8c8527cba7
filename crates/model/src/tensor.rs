//! Tensors as the protocol carries them: a datatype, a shape and the elements in row-major
//! order — as JSON numbers (`data`) or as raw little-endian bytes (Triton's binary extension
//! over REST, `raw_input_contents` over gRPC).

use serde::{Deserialize, Serialize};

use crate::ProtocolError;

/// The protocol's datatypes (`docs/notes/oip-v2.md`, §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum DataType {
    /// One byte per element, 0 or 1.
    Bool,
    /// Unsigned integers.
    Uint8,
    /// Unsigned integers.
    Uint16,
    /// Unsigned integers.
    Uint32,
    /// Unsigned integers.
    Uint64,
    /// Signed integers.
    Int8,
    /// Signed integers.
    Int16,
    /// Signed integers.
    Int32,
    /// Signed integers.
    Int64,
    /// IEEE half precision.
    Fp16,
    /// IEEE single precision.
    Fp32,
    /// IEEE double precision.
    Fp64,
    /// bfloat16.
    Bf16,
    /// Byte strings; in binary form each is a 4-byte little-endian length and the bytes.
    Bytes,
}

impl DataType {
    /// Bytes per element in binary form (`None` for BYTES, whose elements vary).
    pub fn size(self) -> Option<usize> {
        Some(match self {
            Self::Bool | Self::Uint8 | Self::Int8 => 1,
            Self::Uint16 | Self::Int16 | Self::Fp16 | Self::Bf16 => 2,
            Self::Uint32 | Self::Int32 | Self::Fp32 => 4,
            Self::Uint64 | Self::Int64 | Self::Fp64 => 8,
            Self::Bytes => return None,
        })
    }
}

/// Elements in a tensor of `shape`; an error for a negative dimension or an overflow.
pub fn element_count(shape: &[i64]) -> Result<usize, ProtocolError> {
    shape.iter().try_fold(1usize, |n, &d| {
        let d = usize::try_from(d)
            .map_err(|_| ProtocolError::invalid(format!("shape {shape:?} has a negative dimension")))?;
        n.checked_mul(d).ok_or_else(|| ProtocolError::invalid(format!("shape {shape:?} is too large")))
    })
}

/// An FP32 tensor's elements from raw little-endian bytes of `shape`.
pub fn f32_from_le(raw: &[u8], shape: &[i64]) -> Result<Vec<f32>, ProtocolError> {
    let n = element_count(shape)?;
    if raw.len() != n * 4 {
        return Err(ProtocolError::invalid(format!(
            "an FP32 tensor of shape {shape:?} takes {} bytes, got {}",
            n * 4,
            raw.len()
        )));
    }
    Ok(raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
}

/// FP32 elements as raw little-endian bytes.
pub fn f32_to_le(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// FP32 elements from JSON `data`: a flat array of numbers, or nested arrays (flattened in
/// row-major order), of `shape`'s element count.
pub fn f32_from_json(data: &serde_json::Value, shape: &[i64]) -> Result<Vec<f32>, ProtocolError> {
    fn flatten(v: &serde_json::Value, out: &mut Vec<f32>) -> Result<(), ProtocolError> {
        match v {
            serde_json::Value::Array(items) => items.iter().try_for_each(|i| flatten(i, out)),
            serde_json::Value::Number(n) => {
                out.push(n.as_f64().ok_or_else(|| ProtocolError::invalid(format!("{n} is not a number")))? as f32);
                Ok(())
            }
            other => Err(ProtocolError::invalid(format!("an FP32 tensor holds numbers, not {other}"))),
        }
    }
    let mut out = Vec::new();
    flatten(data, &mut out)?;
    let n = element_count(shape)?;
    if out.len() != n {
        return Err(ProtocolError::invalid(format!("shape {shape:?} holds {n} elements, data has {}", out.len())));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fp32_round_trips_through_bytes_and_reads_nested_json() {
        let values = [0.5f32, -1.25, 3.0, f32::MAX, 0.0, 7.75];
        assert_eq!(f32_from_le(&f32_to_le(&values), &[2, 3]).expect("bytes"), values);
        let nested = serde_json::json!([[0.5, -1.25, 3.0], [1, 2, 3]]);
        assert_eq!(f32_from_json(&nested, &[2, 3]).expect("json"), [0.5, -1.25, 3.0, 1.0, 2.0, 3.0]);
    }

    #[test]
    fn a_tensor_that_does_not_fill_its_shape_is_refused() {
        assert!(f32_from_le(&[0; 7], &[2]).is_err());
        assert!(f32_from_json(&serde_json::json!([1, 2, 3]), &[2, 2]).is_err());
        assert!(f32_from_json(&serde_json::json!(["a"]), &[1]).is_err());
        assert!(element_count(&[-1, 3]).is_err());
        assert!(element_count(&[i64::MAX, i64::MAX]).is_err());
        assert_eq!(DataType::Fp32.size(), Some(4));
        assert_eq!(serde_json::to_string(&DataType::Fp32).expect("json"), "\"FP32\"");
    }
}
