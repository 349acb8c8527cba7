//! Tree-ensemble models from ONNX, evaluated in pure Rust.
//!
//! What gradient-boosted and random-forest exporters write (onnxmltools for LightGBM and
//! XGBoost, skl2onnx for scikit-learn): one ONNX-ML `TreeEnsembleClassifier` or
//! `TreeEnsembleRegressor` node, followed by pass-through nodes (`Identity`, `Cast`, and
//! arithmetic by a scalar constant). A graph with any other operator is refused at load with the
//! operator's name. Why not tract: tract-onnx 0.23 inverts binary classifiers' labels, refuses
//! scikit-learn's binary exports and runs 170–310× slower than onnxruntime on these models
//! (`docs/notes/ml-toolchain.md`); this evaluator matches onnxruntime to 1e-6 on the reference
//! model (its test reads onnxruntime's outputs) and also gives per-feature contributions.

pub mod ensemble;
pub mod onnx;

use std::collections::HashMap;

use prost::Message;

use crate::ensemble::{Ensemble, Kind, PostTransform};
use crate::onnx::{ModelProto, NodeProto, elem};

/// Why a model file cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Not an ONNX protobuf.
    #[error("not an ONNX model: {0}")]
    Decode(#[from] prost::DecodeError),
    /// A valid ONNX construct this evaluator does not run.
    #[error("not supported by tally's tree evaluator: {0}")]
    Unsupported(String),
    /// The tree ensemble's attributes are inconsistent.
    #[error("bad tree ensemble: {0}")]
    Attribute(String),
    /// The graph does not connect.
    #[error("bad graph: {0}")]
    Graph(String),
}

/// Why an evaluation failed (the input does not fit the model).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct EvalError(pub String);

/// Element types of the model's tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElemType {
    /// 32-bit float.
    F32,
    /// 64-bit integer.
    I64,
}

/// A graph input or output as declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// Its name.
    pub name: String,
    /// Its element type.
    pub elem: ElemType,
    /// Its shape; -1 for a dynamic dimension (the batch).
    pub shape: Vec<i64>,
}

/// A computed tensor: `rows` × `cols` values, row-major.
#[derive(Debug, Clone, PartialEq)]
pub enum Tensor {
    /// Floats.
    F32(Vec<f32>),
    /// Integers.
    I64(Vec<i64>),
}

#[derive(Debug, Clone, Copy)]
enum Arith {
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Debug, Clone)]
enum Step {
    Trees { ensemble: Box<Ensemble>, input: String, outputs: Vec<String> },
    Identity { from: String, to: String },
    Cast { from: String, to: String, elem: ElemType },
    Scalar { op: Arith, from: String, value: f32, to: String },
}

/// A loaded model.
#[derive(Debug, Clone)]
pub struct Model {
    input: TensorSpec,
    outputs: Vec<TensorSpec>,
    steps: Vec<Step>,
}

fn spec(v: &onnx::ValueInfoProto) -> Result<TensorSpec, LoadError> {
    let t = v
        .r#type
        .as_ref()
        .and_then(|t| t.tensor_type.as_ref())
        .ok_or_else(|| LoadError::Unsupported(format!("{} is not a tensor", v.name)))?;
    let elem = match t.elem_type {
        elem::FLOAT => ElemType::F32,
        elem::INT64 => ElemType::I64,
        other => return Err(LoadError::Unsupported(format!("{} has element type {other}", v.name))),
    };
    let shape = t
        .shape
        .as_ref()
        .map(|s| s.dim.iter().map(|d| d.dim_value.filter(|v| *v > 0).unwrap_or(-1)).collect())
        .unwrap_or_default();
    Ok(TensorSpec { name: v.name.clone(), elem, shape })
}

fn attr<'a>(node: &'a NodeProto, name: &str) -> Option<&'a onnx::AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

fn one(list: &[String], node: &NodeProto, what: &str) -> Result<String, LoadError> {
    match list {
        [x] => Ok(x.clone()),
        _ => Err(LoadError::Graph(format!("{} {:?} needs exactly one {what}", node.op_type, node.name))),
    }
}

impl Model {
    /// Loads an ONNX model from its bytes.
    pub fn from_onnx(bytes: &[u8]) -> Result<Self, LoadError> {
        let model = ModelProto::decode(bytes)?;
        let graph = model.graph.ok_or_else(|| LoadError::Graph("the model has no graph".into()))?;
        let scalars: HashMap<&str, f32> = graph
            .initializer
            .iter()
            .filter_map(|t| {
                let n: i64 = t.dims.iter().product();
                let value = match t.data_type {
                    elem::FLOAT if n == 1 => t
                        .float_data
                        .first()
                        .copied()
                        .or_else(|| t.raw_data.get(..4).and_then(|b| b.try_into().ok()).map(f32::from_le_bytes)),
                    elem::DOUBLE if n == 1 => t.double_data.first().map(|d| *d as f32),
                    _ => None,
                };
                value.map(|v| (t.name.as_str(), v))
            })
            .collect();
        let initialised: Vec<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
        let inputs: Vec<&onnx::ValueInfoProto> =
            graph.input.iter().filter(|i| !initialised.contains(&i.name.as_str())).collect();
        let [input] = inputs.as_slice() else {
            return Err(LoadError::Unsupported(format!("{} graph inputs (tree models have one)", inputs.len())));
        };
        let input = spec(input)?;
        if input.elem != ElemType::F32 {
            return Err(LoadError::Unsupported(format!("input {} is not FLOAT", input.name)));
        }
        let mut steps = Vec::with_capacity(graph.node.len());
        for node in &graph.node {
            let step = match (node.domain.as_str(), node.op_type.as_str()) {
                ("ai.onnx.ml", "TreeEnsembleClassifier" | "TreeEnsembleRegressor") => Step::Trees {
                    ensemble: Box::new(Ensemble::from_node(node)?),
                    input: one(&node.input, node, "input")?,
                    outputs: node.output.clone(),
                },
                ("" | "ai.onnx", "Identity") => {
                    Step::Identity { from: one(&node.input, node, "input")?, to: one(&node.output, node, "output")? }
                }
                ("" | "ai.onnx", "Cast") => {
                    let elem = match attr(node, "to").map(|a| a.i as i32) {
                        Some(elem::FLOAT) => ElemType::F32,
                        Some(elem::INT64) => ElemType::I64,
                        other => return Err(LoadError::Unsupported(format!("Cast to element type {other:?}"))),
                    };
                    Step::Cast { from: one(&node.input, node, "input")?, to: one(&node.output, node, "output")?, elem }
                }
                ("" | "ai.onnx", op @ ("Add" | "Sub" | "Mul" | "Div")) => {
                    let [from, constant] = node.input.as_slice() else {
                        return Err(LoadError::Graph(format!("{op} needs two inputs")));
                    };
                    let value = *scalars.get(constant.as_str()).ok_or_else(|| {
                        LoadError::Unsupported(format!("{op} by {constant:?}, which is not a scalar constant"))
                    })?;
                    let op = match op {
                        "Add" => Arith::Add,
                        "Sub" => Arith::Sub,
                        "Mul" => Arith::Mul,
                        _ => Arith::Div,
                    };
                    Step::Scalar { op, from: from.clone(), value, to: one(&node.output, node, "output")? }
                }
                (domain, op) => {
                    return Err(LoadError::Unsupported(format!(
                        "operator {}{op}",
                        if domain.is_empty() { String::new() } else { format!("{domain}:") }
                    )));
                }
            };
            steps.push(step);
        }
        let outputs = graph.output.iter().map(spec).collect::<Result<Vec<_>, _>>()?;
        let this = Self { input, outputs, steps };
        // A dry run proves the graph connects (every output computed from the input).
        let width = this.width().unwrap_or(1).max(this.ensemble().map_or(1, |e| e.features));
        this.run(&vec![0.0; width], 1).map_err(|e| LoadError::Graph(e.0))?;
        Ok(this)
    }

    /// The input tensor.
    pub fn input(&self) -> &TensorSpec {
        &self.input
    }

    /// The output tensors, in graph order.
    pub fn outputs(&self) -> &[TensorSpec] {
        &self.outputs
    }

    /// Values per row the input takes (its declared second dimension), if fixed.
    pub fn width(&self) -> Option<usize> {
        self.input.shape.get(1).filter(|w| **w > 0).map(|w| *w as usize)
    }

    fn ensemble(&self) -> Option<&Ensemble> {
        self.steps.iter().find_map(|s| match s {
            Step::Trees { ensemble, .. } => Some(ensemble.as_ref()),
            _ => None,
        })
    }

    /// Evaluates `rows` rows (`input` row-major); the outputs in graph order.
    pub fn run(&self, input: &[f32], rows: usize) -> Result<Vec<Tensor>, EvalError> {
        let width = self.check(input, rows)?;
        let mut values: HashMap<&str, Tensor> = HashMap::new();
        values.insert(self.input.name.as_str(), Tensor::F32(input.to_vec()));
        for step in &self.steps {
            match step {
                Step::Trees { ensemble, input, outputs } => {
                    let Some(Tensor::F32(x)) = values.get(input.as_str()) else {
                        return Err(EvalError(format!("tree input {input} is not computed as floats")));
                    };
                    if width < ensemble.features {
                        return Err(EvalError(format!(
                            "the trees read feature {} of rows of {width}",
                            ensemble.features - 1
                        )));
                    }
                    let computed = evaluate(ensemble, x, rows, width);
                    for (name, tensor) in outputs.iter().zip(computed) {
                        values.insert(name.as_str(), tensor);
                    }
                }
                Step::Identity { from, to } => {
                    let t = take(&values, from)?.clone();
                    values.insert(to.as_str(), t);
                }
                Step::Cast { from, to, elem } => {
                    let t = match (take(&values, from)?, elem) {
                        (Tensor::F32(v), ElemType::I64) => Tensor::I64(v.iter().map(|x| *x as i64).collect()),
                        (Tensor::I64(v), ElemType::F32) => Tensor::F32(v.iter().map(|x| *x as f32).collect()),
                        (t, _) => t.clone(),
                    };
                    values.insert(to.as_str(), t);
                }
                Step::Scalar { op, from, value, to } => {
                    let t = match take(&values, from)? {
                        Tensor::F32(v) => Tensor::F32(
                            v.iter()
                                .map(|x| match op {
                                    Arith::Add => x + value,
                                    Arith::Sub => x - value,
                                    Arith::Mul => x * value,
                                    Arith::Div => x / value,
                                })
                                .collect(),
                        ),
                        Tensor::I64(_) => return Err(EvalError(format!("arithmetic on integers ({from})"))),
                    };
                    values.insert(to.as_str(), t);
                }
            }
        }
        self.outputs
            .iter()
            .map(|o| {
                values.remove(o.name.as_str()).ok_or_else(|| EvalError(format!("output {} is never computed", o.name)))
            })
            .collect()
    }

    /// Per-feature contributions to the margin (log-odds for a logistic classifier), `rows` ×
    /// (width + 1) row-major, the last column the bias; `None` unless the model is one
    /// single-score ensemble (a binary classifier or a one-target regressor).
    pub fn contributions(&self, input: &[f32], rows: usize) -> Result<Option<Vec<f32>>, EvalError> {
        let width = self.check(input, rows)?;
        let Some(ensemble) = self.ensemble().filter(|e| e.targets == 1) else { return Ok(None) };
        let mut out = vec![0.0; rows * (width + 1)];
        for (row, o) in input.chunks_exact(width).zip(out.chunks_exact_mut(width + 1)) {
            if !ensemble.contributions(row, o) {
                return Ok(None);
            }
        }
        Ok(Some(out))
    }

    fn check(&self, input: &[f32], rows: usize) -> Result<usize, EvalError> {
        let width = match self.width() {
            Some(w) => w,
            None if rows > 0 => input.len() / rows,
            None => 0,
        };
        if input.len() != rows * width {
            return Err(EvalError(format!(
                "input {} has {} values, expected {rows} rows × {width}",
                self.input.name,
                input.len()
            )));
        }
        Ok(width)
    }
}

fn take<'a>(values: &'a HashMap<&str, Tensor>, name: &str) -> Result<&'a Tensor, EvalError> {
    values.get(name).ok_or_else(|| EvalError(format!("{name} is used before it is computed")))
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

fn transform(post: PostTransform, scores: &mut [f32]) {
    match post {
        PostTransform::None => {}
        PostTransform::Logistic => scores.iter_mut().for_each(|s| *s = sigmoid(*s)),
        PostTransform::Softmax => {
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let sum: f32 = scores
                .iter_mut()
                .map(|s| {
                    *s = (*s - max).exp();
                    *s
                })
                .sum();
            scores.iter_mut().for_each(|s| *s /= sum);
        }
    }
}

/// The ensemble's outputs for `rows` rows: a classifier's labels and probabilities (as
/// onnxruntime computes them), or a regressor's scores.
fn evaluate(e: &Ensemble, x: &[f32], rows: usize, width: usize) -> Vec<Tensor> {
    let mut margin = vec![0.0; e.targets];
    match &e.kind {
        Kind::Classifier { labels, binary: true, weights_positive } => {
            let mut label = Vec::with_capacity(rows);
            let mut proba = Vec::with_capacity(rows * 2);
            for row in x.chunks_exact(width).take(rows) {
                e.margin(row, &mut margin);
                let s = margin[0];
                let (pair, positive) = if *weights_positive && e.post == PostTransform::None {
                    ([1.0 - s, s], s > 0.5)
                } else {
                    let mut pair = [-s, s];
                    transform(e.post, &mut pair);
                    (pair, s > 0.0)
                };
                label.push(labels[usize::from(positive)]);
                proba.extend(pair);
            }
            vec![Tensor::I64(label), Tensor::F32(proba)]
        }
        Kind::Classifier { labels, .. } => {
            let mut label = Vec::with_capacity(rows);
            let mut proba = Vec::with_capacity(rows * labels.len());
            for row in x.chunks_exact(width).take(rows) {
                e.margin(row, &mut margin);
                transform(e.post, &mut margin);
                let best = margin.iter().enumerate().fold(0, |b, (i, v)| if *v > margin[b] { i } else { b });
                label.push(labels[best]);
                proba.extend_from_slice(&margin);
            }
            vec![Tensor::I64(label), Tensor::F32(proba)]
        }
        Kind::Regressor { .. } => {
            let mut y = Vec::with_capacity(rows * e.targets);
            for row in x.chunks_exact(width).take(rows) {
                e.margin(row, &mut margin);
                transform(e.post, &mut margin);
                y.extend_from_slice(&margin);
            }
            vec![Tensor::F32(y)]
        }
    }
}

#[cfg(test)]
mod tests;
