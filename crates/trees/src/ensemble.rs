//! One tree ensemble (the attributes of an ONNX-ML `TreeEnsembleClassifier` or
//! `TreeEnsembleRegressor` node), flattened for evaluation: every node of every tree in one
//! array, children as indices into it, leaf weights as ranges of another.

use std::collections::{BTreeSet, HashMap};

use crate::LoadError;
use crate::onnx::{AttributeProto, NodeProto};

/// How a node compares the row's feature value with its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Leq,
    Lt,
    Gte,
    Gt,
    Eq,
    Neq,
    Leaf,
}

#[derive(Debug, Clone)]
struct Node {
    mode: Mode,
    feature: u32,
    threshold: f32,
    /// Indices into `Ensemble::nodes`.
    if_true: u32,
    if_false: u32,
    /// A missing (NaN) value takes the true branch.
    missing_true: bool,
    /// Leaves: the range of `Ensemble::weights` holding (target, weight) pairs.
    weights: (u32, u32),
    /// Training rows that reached the node (`nodes_hitrates`, where the exporter wrote counts).
    cover: f32,
}

impl Node {
    /// The child a row goes to (not called on leaves).
    fn next(&self, row: &[f32]) -> u32 {
        let x = row[self.feature as usize];
        let go_true = if x.is_nan() {
            self.missing_true
        } else {
            match self.mode {
                Mode::Leq => x <= self.threshold,
                Mode::Lt => x < self.threshold,
                Mode::Gte => x >= self.threshold,
                Mode::Gt => x > self.threshold,
                Mode::Eq => x == self.threshold,
                Mode::Neq => x != self.threshold,
                Mode::Leaf => return self.if_true,
            }
        };
        if go_true { self.if_true } else { self.if_false }
    }
}

/// What the ensemble's scores become.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostTransform {
    /// Raw sums.
    None,
    /// 1 / (1 + e^-x), per score.
    Logistic,
    /// Softmax across the targets.
    Softmax,
}

/// Classifier or regressor, with what each needs after the sums.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// `TreeEnsembleClassifier`.
    Classifier {
        /// Class labels (int64 labels; string labels are refused at load).
        labels: Vec<i64>,
        /// Two labels, weights for one class only: the score is the positive class's.
        binary: bool,
        /// Every leaf weight is ≥ 0 (probability trees): with no transform the binary score is
        /// the positive class's probability itself.
        weights_positive: bool,
    },
    /// `TreeEnsembleRegressor` (aggregate SUM or AVERAGE).
    Regressor {
        /// AVERAGE divides the sums by the tree count.
        average: bool,
    },
}

/// A flattened tree ensemble.
#[derive(Debug, Clone)]
pub struct Ensemble {
    nodes: Vec<Node>,
    weights: Vec<(u32, f32)>,
    roots: Vec<u32>,
    /// Scores per row (classes with weights, or regression targets).
    pub targets: usize,
    base: Vec<f32>,
    /// What follows the sums.
    pub post: PostTransform,
    /// Classifier or regressor.
    pub kind: Kind,
    /// Highest feature index read, plus one (the input's width must be at least this).
    pub features: usize,
    /// Expected value of each node's subtree (single-target ensembles), for contributions.
    expected: Vec<f32>,
}

fn attrs(node: &NodeProto) -> HashMap<&str, &AttributeProto> {
    node.attribute.iter().map(|a| (a.name.as_str(), a)).collect()
}

fn ints<'a>(a: &'a HashMap<&str, &AttributeProto>, name: &str) -> Result<&'a [i64], LoadError> {
    a.get(name).map(|a| a.ints.as_slice()).ok_or_else(|| LoadError::Attribute(format!("{name} is missing")))
}

fn floats<'a>(a: &'a HashMap<&str, &AttributeProto>, name: &str) -> Result<&'a [f32], LoadError> {
    a.get(name).map(|a| a.floats.as_slice()).ok_or_else(|| LoadError::Attribute(format!("{name} is missing")))
}

fn same_len(name: &str, got: usize, want: usize) -> Result<(), LoadError> {
    if got == want { Ok(()) } else { Err(LoadError::Attribute(format!("{name} has {got} values, expected {want}"))) }
}

fn index(v: i64, what: &str) -> Result<u32, LoadError> {
    u32::try_from(v).map_err(|_| LoadError::Attribute(format!("{what} {v} is out of range")))
}

impl Ensemble {
    /// Reads a `TreeEnsembleClassifier` or `TreeEnsembleRegressor` node.
    pub fn from_node(node: &NodeProto) -> Result<Self, LoadError> {
        let a = attrs(node);
        let classifier = node.op_type == "TreeEnsembleClassifier";
        let prefix = if classifier { "class" } else { "target" };
        let tree_ids = ints(&a, "nodes_treeids")?;
        let node_ids = ints(&a, "nodes_nodeids")?;
        let n = node_ids.len();
        same_len("nodes_treeids", tree_ids.len(), n)?;
        let feature_ids = ints(&a, "nodes_featureids")?;
        same_len("nodes_featureids", feature_ids.len(), n)?;
        let values = floats(&a, "nodes_values")?;
        same_len("nodes_values", values.len(), n)?;
        let true_ids = ints(&a, "nodes_truenodeids")?;
        let false_ids = ints(&a, "nodes_falsenodeids")?;
        same_len("nodes_truenodeids", true_ids.len(), n)?;
        same_len("nodes_falsenodeids", false_ids.len(), n)?;
        let modes = a
            .get("nodes_modes")
            .map(|m| m.strings.as_slice())
            .ok_or_else(|| LoadError::Attribute("nodes_modes is missing".into()))?;
        same_len("nodes_modes", modes.len(), n)?;
        let missing = a.get("nodes_missing_value_tracks_true").map(|m| m.ints.as_slice()).unwrap_or(&[]);
        let hitrates = a.get("nodes_hitrates").map(|m| m.floats.as_slice()).unwrap_or(&[]);

        // (tree, node id) → flat index; trees in ascending id order, each tree's root its node 0.
        let mut at: HashMap<(i64, i64), u32> = HashMap::with_capacity(n);
        for (i, (&t, &id)) in tree_ids.iter().zip(node_ids).enumerate() {
            if at.insert((t, id), i as u32).is_some() {
                return Err(LoadError::Attribute(format!("tree {t} repeats node {id}")));
            }
        }
        let trees: BTreeSet<i64> = tree_ids.iter().copied().collect();
        let roots = trees
            .iter()
            .map(|&t| at.get(&(t, 0)).copied().ok_or_else(|| LoadError::Attribute(format!("tree {t} has no node 0"))))
            .collect::<Result<Vec<_>, _>>()?;

        let mut nodes = Vec::with_capacity(n);
        let mut features = 0usize;
        for i in 0..n {
            let mode = match modes[i].as_slice() {
                b"BRANCH_LEQ" => Mode::Leq,
                b"BRANCH_LT" => Mode::Lt,
                b"BRANCH_GTE" => Mode::Gte,
                b"BRANCH_GT" => Mode::Gt,
                b"BRANCH_EQ" => Mode::Eq,
                b"BRANCH_NEQ" => Mode::Neq,
                b"LEAF" => Mode::Leaf,
                other => {
                    return Err(LoadError::Attribute(format!(
                        "node mode {:?} is not one ONNX defines",
                        String::from_utf8_lossy(other)
                    )));
                }
            };
            let child = |id: i64| -> Result<u32, LoadError> {
                at.get(&(tree_ids[i], id)).copied().ok_or_else(|| {
                    LoadError::Attribute(format!(
                        "tree {} node {} points at missing node {id}",
                        tree_ids[i], node_ids[i]
                    ))
                })
            };
            let (if_true, if_false) =
                if mode == Mode::Leaf { (0, 0) } else { (child(true_ids[i])?, child(false_ids[i])?) };
            let feature = index(feature_ids[i], "feature id")?;
            if mode != Mode::Leaf {
                features = features.max(feature as usize + 1);
            }
            nodes.push(Node {
                mode,
                feature,
                threshold: values[i],
                if_true,
                if_false,
                missing_true: missing.get(i).is_some_and(|&m| m != 0),
                weights: (0, 0),
                cover: hitrates.get(i).copied().unwrap_or(1.0),
            });
        }

        // Leaf weights, grouped per leaf.
        let w_trees = ints(&a, &format!("{prefix}_treeids"))?;
        let w_nodes = ints(&a, &format!("{prefix}_nodeids"))?;
        let w_ids = ints(&a, &format!("{prefix}_ids"))?;
        let w_values = floats(&a, &format!("{prefix}_weights"))?;
        same_len(&format!("{prefix}_nodeids"), w_nodes.len(), w_trees.len())?;
        same_len(&format!("{prefix}_ids"), w_ids.len(), w_trees.len())?;
        same_len(&format!("{prefix}_weights"), w_values.len(), w_trees.len())?;
        let mut per_leaf: Vec<Vec<(u32, f32)>> = vec![Vec::new(); n];
        let mut targets_used = BTreeSet::new();
        for k in 0..w_trees.len() {
            let leaf = at.get(&(w_trees[k], w_nodes[k])).copied().ok_or_else(|| {
                LoadError::Attribute(format!("a weight names missing node {} of tree {}", w_nodes[k], w_trees[k]))
            })?;
            let target = index(w_ids[k], "target id")?;
            targets_used.insert(target);
            per_leaf[leaf as usize].push((target, w_values[k]));
        }
        let mut weights = Vec::with_capacity(w_trees.len());
        for (node, leaf_weights) in nodes.iter_mut().zip(per_leaf) {
            let start = weights.len() as u32;
            weights.extend(leaf_weights);
            node.weights = (start, weights.len() as u32);
        }

        let post = match a.get("post_transform").map(|p| p.text()).as_deref() {
            None | Some("NONE") => PostTransform::None,
            Some("LOGISTIC") => PostTransform::Logistic,
            Some("SOFTMAX") => PostTransform::Softmax,
            Some(other) => return Err(LoadError::Unsupported(format!("post_transform {other}"))),
        };
        let base = a.get("base_values").map(|b| b.floats.clone()).unwrap_or_default();
        let weights_positive = weights.iter().all(|(_, w)| *w >= 0.0);
        let (kind, targets) = if classifier {
            if a.contains_key("classlabels_strings") {
                return Err(LoadError::Unsupported("string class labels (classlabels_strings)".into()));
            }
            let labels = ints(&a, "classlabels_int64s")?.to_vec();
            let binary = labels.len() == 2 && targets_used.len() <= 1;
            let targets = if binary { 1 } else { labels.len() };
            if targets_used.iter().any(|&t| t as usize >= targets.max(1)) {
                return Err(LoadError::Attribute("a class id is beyond the class labels".into()));
            }
            (Kind::Classifier { labels, binary, weights_positive }, targets)
        } else {
            let targets = a.get("n_targets").map_or(1, |t| t.i.max(1) as usize);
            let average = match a.get("aggregate_function").map(|f| f.text()).as_deref() {
                None | Some("SUM") => false,
                Some("AVERAGE") => true,
                Some(other) => return Err(LoadError::Unsupported(format!("aggregate_function {other}"))),
            };
            if targets_used.iter().any(|&t| t as usize >= targets) {
                return Err(LoadError::Attribute("a target id is beyond n_targets".into()));
            }
            (Kind::Regressor { average }, targets)
        };
        if !base.is_empty() && base.len() != targets && !(targets == 1 && base.len() == 2) {
            return Err(LoadError::Attribute(format!("base_values has {} values for {targets} scores", base.len())));
        }
        let mut ensemble = Self { nodes, weights, roots, targets, base, post, kind, features, expected: Vec::new() };
        ensemble.expected = ensemble.expected_values();
        Ok(ensemble)
    }

    fn leaf_of(&self, root: u32, row: &[f32]) -> &Node {
        let mut node = &self.nodes[root as usize];
        while node.mode != Mode::Leaf {
            node = &self.nodes[node.next(row) as usize];
        }
        node
    }

    /// The raw scores of one row (before the base values and the transform), added into `out`
    /// (length `targets`).
    fn sums(&self, row: &[f32], out: &mut [f32]) {
        for &root in &self.roots {
            let leaf = self.leaf_of(root, row);
            for &(t, w) in &self.weights[leaf.weights.0 as usize..leaf.weights.1 as usize] {
                out[t as usize] += w;
            }
        }
    }

    /// The scores of one row after aggregation and base values (the margin, before the
    /// post-transform).
    pub fn margin(&self, row: &[f32], out: &mut [f32]) {
        out.iter_mut().for_each(|v| *v = 0.0);
        self.sums(row, out);
        if let Kind::Regressor { average: true } = self.kind {
            let trees = self.roots.len().max(1) as f32;
            out.iter_mut().for_each(|v| *v /= trees);
        }
        for (v, b) in out.iter_mut().zip(&self.base) {
            *v += b;
        }
    }

    /// Expected value of every node's subtree under the training distribution (covers from
    /// `nodes_hitrates`; equal weights where the exporter left 1.0), single-target only.
    fn expected_values(&self) -> Vec<f32> {
        if self.targets != 1 {
            return Vec::new();
        }
        let mut expected = vec![f32::NAN; self.nodes.len()];
        // Children need not follow their parent in the arrays: post-order with an explicit stack.
        for &root in &self.roots {
            let mut stack = vec![(root, false)];
            while let Some((i, children_done)) = stack.pop() {
                let node = &self.nodes[i as usize];
                if node.mode == Mode::Leaf {
                    let (s, e) = node.weights;
                    expected[i as usize] = self.weights[s as usize..e as usize].iter().map(|(_, w)| w).sum();
                } else if children_done {
                    let (t, f) = (&self.nodes[node.if_true as usize], &self.nodes[node.if_false as usize]);
                    let (ct, cf) = (t.cover.max(0.0), f.cover.max(0.0));
                    let (et, ef) = (expected[node.if_true as usize], expected[node.if_false as usize]);
                    expected[i as usize] =
                        if ct + cf > 0.0 { (ct * et + cf * ef) / (ct + cf) } else { (et + ef) / 2.0 };
                } else {
                    stack.push((i, true));
                    stack.push((node.if_true, false));
                    stack.push((node.if_false, false));
                }
            }
        }
        expected
    }

    /// Per-feature contributions of one row to the margin (Saabas path attribution: each split
    /// on the row's path credits its feature with the change in the subtree's expected value),
    /// into `out` of length `features + 1`; the last value is the expected margin (the bias).
    /// `out` sums to [`Self::margin`]. `false` for multi-target ensembles.
    pub fn contributions(&self, row: &[f32], out: &mut [f32]) -> bool {
        if self.targets != 1 || self.expected.is_empty() {
            return false;
        }
        out.iter_mut().for_each(|v| *v = 0.0);
        let bias = out.len() - 1;
        let scale = match self.kind {
            Kind::Regressor { average: true } => 1.0 / self.roots.len().max(1) as f32,
            _ => 1.0,
        };
        for &root in &self.roots {
            let mut i = root as usize;
            out[bias] += self.expected[i] * scale;
            loop {
                let node = &self.nodes[i];
                if node.mode == Mode::Leaf {
                    break;
                }
                let next = node.next(row) as usize;
                out[node.feature as usize] += (self.expected[next] - self.expected[i]) * scale;
                i = next;
            }
        }
        if let Some(b) = self.base.first() {
            out[bias] += b;
        }
        true
    }

    /// Trees in the ensemble.
    pub fn trees(&self) -> usize {
        self.roots.len()
    }
}
