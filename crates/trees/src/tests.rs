use super::*;

const REFERENCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/fraud");

fn reference() -> (Model, Vec<Vec<f32>>, Vec<i64>, Vec<f32>) {
    reference_version("1")
}

fn reference_version(version: &str) -> (Model, Vec<Vec<f32>>, Vec<i64>, Vec<f32>) {
    let bytes = std::fs::read(format!("{REFERENCE}/{version}/model.onnx")).expect("the reference model is committed");
    let model = Model::from_onnx(&bytes).expect("loads");
    let csv = std::fs::read_to_string(format!("{REFERENCE}/{version}/check.csv"))
        .expect("onnxruntime's outputs are committed");
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().expect("header").split(',').collect();
    let width = header.len() - 2;
    let (mut rows, mut labels, mut probs) = (Vec::new(), Vec::new(), Vec::new());
    for line in lines {
        let v: Vec<&str> = line.split(',').collect();
        rows.push(v[..width].iter().map(|x| x.parse::<f32>().expect("float")).collect());
        labels.push(v[width].parse::<i64>().expect("label"));
        probs.push(v[width + 1].parse::<f32>().expect("probability"));
    }
    (model, rows, labels, probs)
}

#[test]
fn the_reference_models_match_onnxruntime_row_for_row() {
    for version in ["1", "2"] {
        matches_onnxruntime(version);
    }
}

fn matches_onnxruntime(version: &str) {
    let (model, rows, labels, probs) = reference_version(version);
    assert_eq!(model.input().name, "features");
    assert_eq!(model.width(), Some(17));
    assert_eq!(model.outputs().iter().map(|o| o.name.as_str()).collect::<Vec<_>>(), ["label", "probabilities"]);
    let flat: Vec<f32> = rows.concat();
    let out = model.run(&flat, rows.len()).expect("runs");
    let [Tensor::I64(label), Tensor::F32(proba)] = out.as_slice() else { panic!("label and probabilities: {out:?}") };
    assert_eq!(label, &labels, "labels as onnxruntime's");
    let worst = proba.chunks_exact(2).zip(&probs).map(|(p, want)| (p[1] - want).abs()).fold(0.0f32, f32::max);
    assert!(worst < 1e-6, "max |Δp| = {worst}");
    for p in proba.chunks_exact(2) {
        assert!((p[0] + p[1] - 1.0).abs() < 1e-6);
    }
    assert!(labels.contains(&1) && labels.contains(&0), "the check rows hold both classes");
}

#[test]
fn contributions_add_up_to_the_margin_and_name_what_pushed_it() {
    let (model, rows, _, probs) = reference();
    let flat: Vec<f32> = rows.concat();
    let c = model.contributions(&flat, rows.len()).expect("runs").expect("a binary model has contributions");
    for (row, p) in c.chunks_exact(18).zip(&probs) {
        let margin: f32 = row.iter().sum();
        let logit = (p / (1.0 - p)).ln();
        assert!((margin - logit).abs() < 1e-3 * logit.abs().max(1.0), "{margin} vs {logit}");
    }
    // Bias is the same for every row (the expected margin over the training rows).
    assert!(c.chunks_exact(18).all(|r| (r[17] - c[17]).abs() < 1e-6));
}

#[test]
fn bad_input_is_refused_with_what_was_expected() {
    let (model, ..) = reference();
    let err = model.run(&[0.0; 10], 1).expect_err("10 values for 17 features");
    assert!(err.0.contains("expected 1 rows × 17"), "{err}");
    assert!(matches!(Model::from_onnx(b"not a model"), Err(LoadError::Decode(_) | LoadError::Graph(_))));
}

/// A small binary model with a NaN-tracking split and a leaf missing from no weight list,
/// written by hand: the evaluator's semantics, independent of any exporter.
fn stump(post: &str, missing_true: i64) -> Vec<u8> {
    use onnx::*;
    let ints = |name: &str, v: Vec<i64>| AttributeProto { name: name.into(), ints: v, ..Default::default() };
    let floats = |name: &str, v: Vec<f32>| AttributeProto { name: name.into(), floats: v, ..Default::default() };
    let strings = |name: &str, v: Vec<&str>| AttributeProto {
        name: name.into(),
        strings: v.into_iter().map(|s| s.as_bytes().to_vec()).collect(),
        ..Default::default()
    };
    let node = NodeProto {
        input: vec!["x".into()],
        output: vec!["label".into(), "probabilities".into()],
        name: "trees".into(),
        op_type: "TreeEnsembleClassifier".into(),
        domain: "ai.onnx.ml".into(),
        attribute: vec![
            ints("nodes_treeids", vec![0, 0, 0]),
            ints("nodes_nodeids", vec![0, 1, 2]),
            ints("nodes_featureids", vec![1, 0, 0]),
            floats("nodes_values", vec![2.5, 0.0, 0.0]),
            strings("nodes_modes", vec!["BRANCH_LT", "LEAF", "LEAF"]),
            ints("nodes_truenodeids", vec![1, 0, 0]),
            ints("nodes_falsenodeids", vec![2, 0, 0]),
            ints("nodes_missing_value_tracks_true", vec![missing_true, 0, 0]),
            floats("nodes_hitrates", vec![4.0, 3.0, 1.0]),
            ints("class_treeids", vec![0, 0]),
            ints("class_nodeids", vec![1, 2]),
            ints("class_ids", vec![0, 0]),
            floats("class_weights", vec![-1.0, 3.0]),
            ints("classlabels_int64s", vec![0, 1]),
            AttributeProto { name: "post_transform".into(), s: post.as_bytes().to_vec(), ..Default::default() },
        ],
    };
    let tensor = |name: &str, elem_type: i32, dims: Vec<Option<i64>>| ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeTensor {
                elem_type,
                shape: Some(TensorShapeProto {
                    dim: dims.into_iter().map(|d| Dimension { dim_value: d, dim_param: None }).collect(),
                }),
            }),
        }),
    };
    let model = ModelProto {
        ir_version: 8,
        producer_name: "test".into(),
        graph: Some(GraphProto {
            node: vec![node],
            name: "g".into(),
            initializer: vec![],
            input: vec![tensor("x", elem::FLOAT, vec![None, Some(2)])],
            output: vec![
                tensor("label", elem::INT64, vec![None]),
                tensor("probabilities", elem::FLOAT, vec![None, Some(2)]),
            ],
        }),
        opset_import: vec![],
    };
    model.encode_to_vec()
}

#[test]
fn branches_missing_values_and_the_logistic_follow_onnx() {
    let m = Model::from_onnx(&stump("LOGISTIC", 1)).expect("loads");
    let out = m.run(&[0.0, 1.0, 0.0, 9.0, 0.0, f32::NAN], 3).expect("runs");
    let [Tensor::I64(label), Tensor::F32(p)] = out.as_slice() else { panic!("{out:?}") };
    assert_eq!(label, &[0, 1, 0], "x1 < 2.5 → weight −1 (class 0); else +3; NaN tracks true");
    assert!((p[1] - sigmoid(-1.0)).abs() < 1e-7 && (p[3] - sigmoid(3.0)).abs() < 1e-7);
    let m = Model::from_onnx(&stump("LOGISTIC", 0)).expect("loads");
    let out = m.run(&[0.0, f32::NAN], 1).expect("runs");
    assert_eq!(out[0], Tensor::I64(vec![1]), "NaN takes the false branch unless it tracks true");
    // Contributions: expected root value (3·−1 + 1·3)/4 = 0; a row going right gets +3 on x1.
    let c = m.contributions(&[0.0, 9.0], 1).expect("runs").expect("binary");
    assert_eq!(c, vec![0.0, 3.0, 0.0]);
    assert!(matches!(Model::from_onnx(&stump("PROBIT", 1)), Err(LoadError::Unsupported(_))));
}
