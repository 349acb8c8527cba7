//! A tensor's elements, decoded: what the server evaluates and the client reads, whichever
//! wire form (JSON `data`, REST binary, gRPC raw or typed contents) carried them. The numeric
//! datatypes a tabular model meets; others are refused by name.

use serde_json::Value;

use crate::ProtocolError;
use crate::tensor::{DataType, element_count};

/// Decoded elements, row-major.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    /// FP32.
    F32(Vec<f32>),
    /// FP64.
    F64(Vec<f64>),
    /// INT64.
    I64(Vec<i64>),
    /// INT32.
    I32(Vec<i32>),
}

/// A named tensor with decoded elements.
#[derive(Debug, Clone, PartialEq)]
pub struct Named {
    /// Its name.
    pub name: String,
    /// Its shape.
    pub shape: Vec<i64>,
    /// Its elements.
    pub values: Values,
}

fn unsupported(dt: DataType) -> ProtocolError {
    ProtocolError::invalid(format!("datatype {dt:?} is not supported here (FP32, FP64, INT32, INT64 are)"))
}

fn check_len(shape: &[i64], got: usize) -> Result<(), ProtocolError> {
    let n = element_count(shape)?;
    if n == got {
        Ok(())
    } else {
        Err(ProtocolError::invalid(format!("shape {shape:?} holds {n} elements, the data has {got}")))
    }
}

fn le<const N: usize, T>(raw: &[u8], from: fn([u8; N]) -> T) -> Vec<T> {
    raw.chunks_exact(N).map(|c| from(c.try_into().unwrap_or([0; N]))).collect()
}

impl Values {
    /// Its datatype.
    pub fn datatype(&self) -> DataType {
        match self {
            Self::F32(_) => DataType::Fp32,
            Self::F64(_) => DataType::Fp64,
            Self::I64(_) => DataType::Int64,
            Self::I32(_) => DataType::Int32,
        }
    }

    /// Element count.
    pub fn len(&self) -> usize {
        match self {
            Self::F32(v) => v.len(),
            Self::F64(v) => v.len(),
            Self::I64(v) => v.len(),
            Self::I32(v) => v.len(),
        }
    }

    /// No elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// From raw little-endian bytes (REST binary, gRPC `raw_*_contents`).
    pub fn from_raw(dt: DataType, raw: &[u8], shape: &[i64]) -> Result<Self, ProtocolError> {
        let size = dt.size().ok_or_else(|| unsupported(dt))?;
        if !raw.len().is_multiple_of(size) {
            return Err(ProtocolError::invalid(format!("{} bytes are not whole {dt:?} elements", raw.len())));
        }
        let v = match dt {
            DataType::Fp32 => Self::F32(le(raw, f32::from_le_bytes)),
            DataType::Fp64 => Self::F64(le(raw, f64::from_le_bytes)),
            DataType::Int64 => Self::I64(le(raw, i64::from_le_bytes)),
            DataType::Int32 => Self::I32(le(raw, i32::from_le_bytes)),
            other => return Err(unsupported(other)),
        };
        check_len(shape, v.len())?;
        Ok(v)
    }

    /// From JSON `data`, flat or nested (flattened row-major). `null` reads as NaN for floats
    /// (MLServer writes NaN so).
    pub fn from_json(dt: DataType, data: &Value, shape: &[i64]) -> Result<Self, ProtocolError> {
        fn flat<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
            match v {
                Value::Array(items) => items.iter().for_each(|i| flat(i, out)),
                other => out.push(other),
            }
        }
        let mut items = Vec::new();
        flat(data, &mut items);
        let bad = |v: &Value| ProtocolError::invalid(format!("{v} is not a {dt:?} element"));
        let float = |v: &&Value| match v {
            Value::Null => Ok(f64::NAN),
            Value::Number(n) => n.as_f64().ok_or_else(|| bad(v)),
            _ => Err(bad(v)),
        };
        let int = |v: &&Value| v.as_i64().ok_or_else(|| bad(v));
        let values = match dt {
            DataType::Fp32 => Self::F32(items.iter().map(|v| float(v).map(|x| x as f32)).collect::<Result<_, _>>()?),
            DataType::Fp64 => Self::F64(items.iter().map(float).collect::<Result<_, _>>()?),
            DataType::Int64 => Self::I64(items.iter().map(int).collect::<Result<_, _>>()?),
            DataType::Int32 => Self::I32(
                items
                    .iter()
                    .map(|v| int(v).and_then(|x| i32::try_from(x).map_err(|_| bad(v))))
                    .collect::<Result<_, _>>()?,
            ),
            other => return Err(unsupported(other)),
        };
        check_len(shape, values.len())?;
        Ok(values)
    }

    /// As raw little-endian bytes.
    pub fn to_raw(&self) -> Vec<u8> {
        match self {
            Self::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Self::F64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Self::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Self::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }

    /// As a flat JSON array (non-finite floats as `null`: JSON has no NaN).
    pub fn to_json(&self) -> Value {
        let float = |x: f64| serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number);
        Value::Array(match self {
            Self::F32(v) => v.iter().map(|x| float(f64::from(*x))).collect(),
            Self::F64(v) => v.iter().map(|x| float(*x)).collect(),
            Self::I64(v) => v.iter().map(|x| Value::from(*x)).collect(),
            Self::I32(v) => v.iter().map(|x| Value::from(*x)).collect(),
        })
    }

    /// Every element as f64 (what a client reading a score needs, whatever the server sent).
    pub fn to_f64(&self) -> Vec<f64> {
        match self {
            Self::F32(v) => v.iter().map(|x| f64::from(*x)).collect(),
            Self::F64(v) => v.clone(),
            Self::I64(v) => v.iter().map(|x| *x as f64).collect(),
            Self::I32(v) => v.iter().map(|x| f64::from(*x)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_supported_datatype_round_trips_through_bytes_and_json() {
        for v in [
            Values::F32(vec![0.5, -2.0, 3.25, 1e9]),
            Values::F64(vec![0.1, 0.2, -7.0, 1e300]),
            Values::I64(vec![1, -2, i64::MAX, 0]),
            Values::I32(vec![1, -2, i32::MIN, 0]),
        ] {
            let dt = v.datatype();
            assert_eq!(Values::from_raw(dt, &v.to_raw(), &[2, 2]).expect("raw"), v);
            assert_eq!(Values::from_json(dt, &v.to_json(), &[4]).expect("json"), v);
        }
        let nested = serde_json::json!([[1, 2], [3, null]]);
        let Values::F64(x) = Values::from_json(DataType::Fp64, &nested, &[2, 2]).expect("nested") else { panic!() };
        assert_eq!(&x[..3], &[1.0, 2.0, 3.0]);
        assert!(x[3].is_nan(), "null is NaN");
    }

    #[test]
    fn elements_that_do_not_fit_are_refused() {
        assert!(Values::from_raw(DataType::Fp32, &[0; 6], &[1]).is_err());
        assert!(Values::from_raw(DataType::Fp32, &[0; 8], &[3]).is_err());
        assert!(Values::from_json(DataType::Int32, &serde_json::json!([1e12]), &[1]).is_err());
        assert!(Values::from_json(DataType::Int64, &serde_json::json!(["x"]), &[1]).is_err());
        assert!(Values::from_json(DataType::Bytes, &serde_json::json!(["x"]), &[1]).is_err());
    }
}
