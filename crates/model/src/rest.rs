//! The REST wire format of an inference: a JSON document, optionally followed by raw tensor
//! bytes (Triton's binary tensor data extension). Clients do not reliably send a
//! `Content-Type` (tritonclient's sync client sends none), so a body is split by the
//! `Inference-Header-Content-Length` header alone: absent, the whole body is JSON; present, that
//! many bytes of JSON, then each binary tensor's bytes in the order of the JSON's `inputs` (or
//! `outputs`), each as long as its `binary_data_size` parameter says.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ProtocolError;
use crate::tensor::DataType;

/// The header that says where the JSON ends.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// A tensor of a request or a response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tensor {
    /// Its name.
    pub name: String,
    /// Its shape.
    pub shape: Vec<i64>,
    /// Its datatype.
    pub datatype: DataType,
    /// Parameters (`binary_data_size` when its data is in the binary section).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub parameters: Map<String, Value>,
    /// Its elements as JSON, when not binary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    /// Its elements as raw bytes, when binary (not part of the JSON).
    #[serde(skip)]
    pub raw: Option<Vec<u8>>,
}

/// An output the client asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestedOutput {
    /// Its name.
    pub name: String,
    /// Parameters (`binary_data: true|false`).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub parameters: Map<String, Value>,
}

impl RequestedOutput {
    /// Whether the client wants it in the binary section (`binary_data`, else the request's
    /// `binary_data_output`).
    pub fn binary(&self, request_default: bool) -> bool {
        self.parameters.get("binary_data").and_then(Value::as_bool).unwrap_or(request_default)
    }
}

/// An inference request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InferRequest {
    /// Echoed in the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Request parameters (`binary_data_output` …).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub parameters: Map<String, Value>,
    /// Inputs.
    pub inputs: Vec<Tensor>,
    /// Outputs asked for (all, when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Vec<RequestedOutput>>,
}

/// An inference response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InferResponse {
    /// The model.
    pub model_name: String,
    /// Its version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
    /// The request's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Response parameters.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub parameters: Map<String, Value>,
    /// Outputs.
    pub outputs: Vec<Tensor>,
}

/// The `binary_data_size` parameter of a tensor, if it has one.
fn binary_size(t: &Tensor) -> Result<Option<usize>, ProtocolError> {
    match t.parameters.get("binary_data_size") {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| ProtocolError::invalid(format!("{}: binary_data_size must be a byte count", t.name))),
    }
}

/// Splits a body: the JSON document, and each binary tensor's bytes attached to it.
fn split<T: for<'de> Deserialize<'de>>(
    body: &[u8],
    header_length: Option<&str>,
    tensors: impl Fn(&mut T) -> &mut Vec<Tensor>,
) -> Result<T, ProtocolError> {
    let json_len = match header_length {
        None => body.len(),
        Some(raw) => raw.trim().parse::<usize>().ok().filter(|&n| n <= body.len()).ok_or_else(|| {
            ProtocolError::invalid(format!("{HEADER_LENGTH} {raw:?} is not a length within the body"))
        })?,
    };
    let (json, mut rest) = body.split_at(json_len);
    let mut doc: T =
        serde_json::from_slice(json).map_err(|e| ProtocolError::invalid(format!("the JSON part is not valid: {e}")))?;
    for t in tensors(&mut doc).iter_mut() {
        if let Some(n) = binary_size(t)? {
            if n > rest.len() {
                return Err(ProtocolError::invalid(format!(
                    "{}: binary_data_size {n} runs past the body's {} remaining bytes",
                    t.name,
                    rest.len()
                )));
            }
            let (mine, after) = rest.split_at(n);
            t.raw = Some(mine.to_vec());
            rest = after;
        }
    }
    if !rest.is_empty() {
        return Err(ProtocolError::invalid(format!("{} bytes after the last binary tensor", rest.len())));
    }
    Ok(doc)
}

/// Joins a document and its tensors' raw bytes into a body; returns it with the
/// `Inference-Header-Content-Length` value when any tensor is binary.
fn join<T: Serialize>(doc: &T, tensors: &[Tensor]) -> Result<(Vec<u8>, Option<usize>), ProtocolError> {
    let mut body =
        serde_json::to_vec(doc).map_err(|e| ProtocolError::invalid(format!("cannot encode the document: {e}")))?;
    let json_len = body.len();
    let mut any = false;
    for raw in tensors.iter().filter_map(|t| t.raw.as_ref()) {
        body.extend_from_slice(raw);
        any = true;
    }
    Ok((body, any.then_some(json_len)))
}

impl InferRequest {
    /// Parses a request body (see the module documentation).
    pub fn from_body(body: &[u8], header_length: Option<&str>) -> Result<Self, ProtocolError> {
        split(body, header_length, |r: &mut Self| &mut r.inputs)
    }

    /// The request as a body, and the `Inference-Header-Content-Length` value if any input is
    /// binary (each binary input must carry its `binary_data_size`).
    pub fn to_body(&self) -> Result<(Vec<u8>, Option<usize>), ProtocolError> {
        join(self, &self.inputs)
    }
}

impl InferResponse {
    /// Parses a response body (see the module documentation).
    pub fn from_body(body: &[u8], header_length: Option<&str>) -> Result<Self, ProtocolError> {
        split(body, header_length, |r: &mut Self| &mut r.outputs)
    }

    /// The response as a body, and the `Inference-Header-Content-Length` value if any output is
    /// binary.
    pub fn to_body(&self) -> Result<(Vec<u8>, Option<usize>), ProtocolError> {
        join(self, &self.outputs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::{f32_from_le, f32_to_le};

    /// What tritonclient.http sends by default: inputs in the binary section, no Content-Type,
    /// `binary_data_output` when it names no outputs.
    fn triton_style_body(values: &[f32]) -> (Vec<u8>, String) {
        let raw = f32_to_le(values);
        let json = serde_json::json!({
            "inputs": [{"name": "input-0", "shape": [2, 2], "datatype": "FP32",
                        "parameters": {"binary_data_size": raw.len()}}],
            "parameters": {"binary_data_output": true},
        })
        .to_string();
        let mut body = json.clone().into_bytes();
        body.extend_from_slice(&raw);
        (body, json.len().to_string())
    }

    #[test]
    fn a_binary_request_splits_at_the_header_length() {
        let (body, header) = triton_style_body(&[1.0, 2.0, 3.0, 4.5]);
        let r = InferRequest::from_body(&body, Some(&header)).expect("valid");
        assert_eq!(r.inputs[0].name, "input-0");
        let raw = r.inputs[0].raw.as_deref().expect("binary");
        assert_eq!(f32_from_le(raw, &r.inputs[0].shape).expect("fp32"), [1.0, 2.0, 3.0, 4.5]);
        assert_eq!(r.parameters["binary_data_output"], true);
        assert_eq!(r.outputs, None);
    }

    #[test]
    fn a_json_request_needs_no_header_and_round_trips() {
        let body = br#"{"id":"r1","inputs":[{"name":"x","shape":[1,3],"datatype":"FP32","data":[1,2,3]}],
                        "outputs":[{"name":"probabilities","parameters":{"binary_data":false}}]}"#;
        let r = InferRequest::from_body(body, None).expect("valid");
        assert_eq!(r.id.as_deref(), Some("r1"));
        assert!(!r.outputs.as_ref().expect("asked")[0].binary(true));
        let (again, header) = r.to_body().expect("encode");
        assert_eq!(header, None, "nothing binary");
        assert_eq!(InferRequest::from_body(&again, None).expect("valid"), r);
    }

    #[test]
    fn a_binary_response_round_trips_and_bad_lengths_are_refused() {
        let raw = f32_to_le(&[0.25, 0.75]);
        let mut params = Map::new();
        params.insert("binary_data_size".into(), raw.len().into());
        let response = InferResponse {
            model_name: "fraud".into(),
            model_version: Some("1".into()),
            id: None,
            parameters: Map::new(),
            outputs: vec![Tensor {
                name: "probabilities".into(),
                shape: vec![1, 2],
                datatype: DataType::Fp32,
                parameters: params,
                data: None,
                raw: Some(raw),
            }],
        };
        let (body, header) = response.to_body().expect("encode");
        let header = header.expect("binary").to_string();
        assert_eq!(InferResponse::from_body(&body, Some(&header)).expect("valid"), response);
        assert!(InferResponse::from_body(&body, Some("99999")).is_err(), "past the body");
        assert!(InferResponse::from_body(&body[..body.len() - 1], Some(&header)).is_err(), "a short tensor");
        let (mut long, header2) = triton_style_body(&[1.0; 4]);
        long.push(0);
        assert!(InferRequest::from_body(&long, Some(&header2)).is_err(), "bytes after the last tensor");
    }
}
