//! A structural diff of two traces: spans are matched by their path of `service: operation`
//! names from the root, so the same request served twice lines up even though every id differs.

use std::collections::HashMap;

use crate::trace_view::TraceView;

/// The union of both traces' span paths, in tree order (trace A's order, then what B adds).
#[derive(Debug, Clone, PartialEq)]
pub struct TraceComparison {
    pub rows: Vec<ComparedOperation>,
}

/// One path present in either trace, with how often and how long it ran in each.
#[derive(Debug, Clone, PartialEq)]
pub struct ComparedOperation {
    pub depth: usize,
    pub service: String,
    pub operation: String,
    pub a: Option<PathStats>,
    pub b: Option<PathStats>,
}

/// The spans of one trace at one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PathStats {
    pub spans: usize,
    pub total_ns: i64,
    pub errors: usize,
}

impl PathStats {
    pub fn mean_ns(&self) -> i64 {
        self.total_ns / self.spans.max(1) as i64
    }
}

/// How a path differs between the traces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Only in trace B.
    Added,
    /// Only in trace A.
    Removed,
    /// In both, with a different number of spans or errors.
    Changed,
    /// In both, as often.
    Same,
}

impl ComparedOperation {
    pub fn change(&self) -> Change {
        match (self.a, self.b) {
            (None, _) => Change::Added,
            (_, None) => Change::Removed,
            (Some(a), Some(b)) if a.spans != b.spans || a.errors != b.errors => Change::Changed,
            _ => Change::Same,
        }
    }

    /// B's mean duration minus A's, when the path is in both.
    pub fn delta_ns(&self) -> Option<i64> {
        Some(self.b?.mean_ns() - self.a?.mean_ns())
    }

    /// The delta relative to A's mean duration, in percent.
    pub fn delta_percent(&self) -> Option<f64> {
        let a = self.a?.mean_ns();
        (a > 0).then(|| self.delta_ns().unwrap_or(0) as f64 * 100.0 / a as f64)
    }
}

/// A node of the merged path tree.
struct PathNode {
    service: String,
    operation: String,
    depth: usize,
    a: Option<PathStats>,
    b: Option<PathStats>,
    children: Vec<usize>,
    child_of: HashMap<(String, String), usize>,
}

/// Compares trace `a` with trace `b`.
pub fn compare(a: &TraceView, b: &TraceView) -> TraceComparison {
    // Node 0 is a virtual root above every trace's roots.
    let mut nodes = vec![PathNode {
        service: String::new(),
        operation: String::new(),
        depth: 0,
        a: None,
        b: None,
        children: Vec::new(),
        child_of: HashMap::new(),
    }];
    for (trace, is_a) in [(a, true), (b, false)] {
        // Spans come in tree order, so each span's parent node is the last node seen one level up.
        let mut node_at_depth: Vec<usize> = vec![0];
        for span in &trace.spans {
            node_at_depth.truncate(span.depth + 1);
            let parent = *node_at_depth.last().expect("the virtual root stays");
            let key = (span.service.clone(), span.name.clone());
            let node = match nodes[parent].child_of.get(&key) {
                Some(&node) => node,
                None => {
                    let node = nodes.len();
                    nodes.push(PathNode {
                        service: key.0.clone(),
                        operation: key.1.clone(),
                        depth: span.depth,
                        a: None,
                        b: None,
                        children: Vec::new(),
                        child_of: HashMap::new(),
                    });
                    nodes[parent].children.push(node);
                    nodes[parent].child_of.insert(key, node);
                    node
                }
            };
            let stats = if is_a {
                &mut nodes[node].a
            } else {
                &mut nodes[node].b
            };
            let stats = stats.get_or_insert_with(PathStats::default);
            stats.spans += 1;
            stats.total_ns += span.duration_ns;
            stats.errors += usize::from(span.is_error());
            node_at_depth.push(node);
        }
    }
    let mut rows = Vec::with_capacity(nodes.len() - 1);
    let mut stack: Vec<usize> = nodes[0].children.iter().rev().copied().collect();
    while let Some(i) = stack.pop() {
        let node = &nodes[i];
        rows.push(ComparedOperation {
            depth: node.depth,
            service: node.service.clone(),
            operation: node.operation.clone(),
            a: node.a,
            b: node.b,
        });
        stack.extend(node.children.iter().rev());
    }
    TraceComparison { rows }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace_view::tests::trace;

    #[test]
    fn paths_line_up_and_differences_show() {
        let a = trace(&[
            ("api", "GET /", 1, 0, 0, 100),
            ("db", "SELECT", 2, 1, 10, 20),
            ("db", "SELECT", 3, 1, 20, 30),
            ("cache", "get", 4, 1, 30, 35),
        ]);
        let b = trace(&[
            ("api", "GET /", 11, 0, 0, 150),
            ("db", "SELECT", 12, 11, 10, 40),
            ("mail", "send", 13, 11, 40, 60),
        ]);
        let rows = compare(&a, &b).rows;
        let summary: Vec<(&str, usize, Change)> = rows
            .iter()
            .map(|r| (r.operation.as_str(), r.depth, r.change()))
            .collect();
        assert_eq!(
            summary,
            [
                ("GET /", 0, Change::Same),
                ("SELECT", 1, Change::Changed),
                ("get", 1, Change::Removed),
                ("send", 1, Change::Added),
            ]
        );
        assert_eq!(rows[0].delta_ns(), Some(50_000_000));
        assert_eq!(rows[0].delta_percent(), Some(50.0));
        assert_eq!(rows[1].a.unwrap().spans, 2);
        assert_eq!(rows[1].delta_ns(), Some(20_000_000));
        assert_eq!(rows[3].delta_ns(), None);
    }
}
