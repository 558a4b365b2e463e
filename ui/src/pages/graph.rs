//! Left-to-right layered layout of a directed graph with a label on every edge, for the
//! service dependency graph (the Sugiyama scheme, kept small):
//!
//! 1. cycles are broken by reversing the back edges of a depth-first search (they are drawn
//!    with the arrow at the other end, so the picture still shows the real direction);
//! 2. every node gets the layer of the longest path reaching it, so callers sit left of
//!    their callees;
//! 3. between two node layers lies a label column: an edge passes through its label box in
//!    the column right after its caller's layer, and through thin waypoints in the columns
//!    it crosses further on; labels and waypoints are ordered and stacked like nodes, so no
//!    two boxes in a column can overlap and columns never share x ranges;
//! 4. each column is ordered by the barycenter of its neighbours, sweeping right and left,
//!    keeping the order with the fewest crossings;
//! 5. vertical positions pull each box toward its neighbours while keeping the column order
//!    and spacing (isotonic regression, solved by pooling adjacent violators).

use std::fmt::Write;

/// Space around the drawing.
const MARGIN: f64 = 16.0;
/// Horizontal space between columns, where the edge curves run.
const COLUMN_GAP: f64 = 36.0;
/// Vertical space between boxes in a column.
const ROW_GAP: f64 = 20.0;
/// The height of a waypoint of a long edge.
const WAYPOINT_HEIGHT: f64 = 4.0;
const ORDERING_SWEEPS: usize = 12;
const POSITIONING_SWEEPS: usize = 16;

/// The size of a box to be placed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Size {
    pub width: f64,
    pub height: f64,
}

/// An edge between two nodes (indexes into the node list), with the size of its label.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EdgeSpec {
    pub from: usize,
    pub to: usize,
    pub label: Size,
}

/// A placed box: top-left corner and size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placed {
    pub x: f64,
    pub y: f64,
    pub width: f64,
    pub height: f64,
}

impl Placed {
    fn center_y(&self) -> f64 {
        self.y + self.height / 2.0
    }
}

/// An edge as drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutedEdge {
    /// SVG path data from the left end to the right end, passing through the label.
    pub path: String,
    pub label: Placed,
    /// True when the edge runs right to left: its arrow belongs at the start of the path.
    pub reversed: bool,
}

/// The whole drawing; nodes and edges in the order given.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphLayout {
    pub width: f64,
    pub height: f64,
    pub nodes: Vec<Placed>,
    pub edges: Vec<RoutedEdge>,
}

/// What occupies a slot in a column.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Item {
    Node(usize),
    Label(usize),
    Waypoint(usize),
}

/// The working state: items by column, their links to the next column, their positions.
struct Columns {
    items: Vec<Item>,
    sizes: Vec<Size>,
    column_of: Vec<usize>,
    /// Per column, item ids from top to bottom.
    order: Vec<Vec<usize>>,
    /// Neighbours in the column to the left / right.
    left: Vec<Vec<usize>>,
    right: Vec<Vec<usize>>,
    /// Top of each item.
    top: Vec<f64>,
}

/// Lays out `nodes` and `edges` (self-loops are not drawn and get an empty path).
pub fn layout(nodes: &[Size], edges: &[EdgeSpec]) -> GraphLayout {
    let reversed = back_edges(nodes.len(), edges);
    let forward: Vec<(usize, usize)> = edges
        .iter()
        .zip(&reversed)
        .map(|(edge, &back)| {
            if back {
                (edge.to, edge.from)
            } else {
                (edge.from, edge.to)
            }
        })
        .collect();
    let layer = longest_path_layers(nodes.len(), &forward);

    // Items: nodes in even columns, labels and waypoints in odd ones.
    let columns = layer.iter().map(|l| 2 * l + 1).max().unwrap_or(1);
    let mut state = Columns {
        items: Vec::new(),
        sizes: Vec::new(),
        column_of: Vec::new(),
        order: vec![Vec::new(); columns],
        left: Vec::new(),
        right: Vec::new(),
        top: Vec::new(),
    };
    for (node, size) in nodes.iter().enumerate() {
        state.add(Item::Node(node), *size, 2 * layer[node]);
    }
    let mut chains: Vec<Vec<usize>> = Vec::with_capacity(edges.len());
    for (edge, &(from, to)) in forward.iter().enumerate() {
        if from == to {
            chains.push(Vec::new());
            continue;
        }
        let mut chain = vec![from];
        for column in 2 * layer[from] + 1..2 * layer[to] {
            let (item, size) = if column == 2 * layer[from] + 1 {
                (Item::Label(edge), edges[edge].label)
            } else {
                (
                    Item::Waypoint(edge),
                    Size {
                        width: 0.0,
                        height: WAYPOINT_HEIGHT,
                    },
                )
            };
            chain.push(state.add(item, size, column));
        }
        chain.push(to);
        for pair in chain.windows(2) {
            state.right[pair[0]].push(pair[1]);
            state.left[pair[1]].push(pair[0]);
        }
        chains.push(chain);
    }

    state.reduce_crossings();
    state.position_vertically();

    // Columns left to right: each as wide as its widest box.
    let mut column_x = Vec::with_capacity(columns);
    let mut x = MARGIN;
    for column in &state.order {
        let width = column
            .iter()
            .map(|&item| state.sizes[item].width)
            .fold(0.0, f64::max);
        column_x.push((x, width));
        x += width + COLUMN_GAP;
    }
    let width = x - COLUMN_GAP + MARGIN;
    let height = (0..state.items.len())
        .map(|item| state.top[item] + state.sizes[item].height)
        .fold(0.0, f64::max)
        + MARGIN;
    let placed = |item: usize| {
        let (column_left, column_width) = column_x[state.column_of[item]];
        let size = state.sizes[item];
        Placed {
            x: column_left + (column_width - size.width) / 2.0,
            y: state.top[item],
            width: size.width,
            height: size.height,
        }
    };

    let nodes_placed: Vec<Placed> = (0..nodes.len()).map(placed).collect();
    let ports = Ports::assign(&state, &chains, &nodes_placed);
    let routed = chains
        .iter()
        .enumerate()
        .map(|(edge, chain)| {
            if chain.is_empty() {
                return RoutedEdge {
                    path: String::new(),
                    label: nodes_placed[edges[edge].from],
                    reversed: false,
                };
            }
            let inner = &chain[1..chain.len() - 1];
            let mut points = vec![ports.exit[edge]];
            for &item in inner {
                let place = placed(item);
                let (column_left, column_width) = column_x[state.column_of[item]];
                points.push((column_left, place.center_y()));
                points.push((column_left + column_width, place.center_y()));
            }
            points.push(ports.entry[edge]);
            RoutedEdge {
                path: curve(&points),
                label: placed(inner[0]),
                reversed: reversed[edge],
            }
        })
        .collect();
    GraphLayout {
        width,
        height,
        nodes: nodes_placed,
        edges: routed,
    }
}

/// Where each edge leaves its left node and enters its right node: spread over the node's
/// side in the order of the boxes they lead to, so parallel edges do not start as one line.
struct Ports {
    exit: Vec<(f64, f64)>,
    entry: Vec<(f64, f64)>,
}

impl Ports {
    fn assign(state: &Columns, chains: &[Vec<usize>], nodes: &[Placed]) -> Self {
        let mut exit = vec![(0.0, 0.0); chains.len()];
        let mut entry = vec![(0.0, 0.0); chains.len()];
        let mut outgoing: Vec<Vec<(f64, usize)>> = vec![Vec::new(); nodes.len()];
        let mut incoming: Vec<Vec<(f64, usize)>> = vec![Vec::new(); nodes.len()];
        for (edge, chain) in chains.iter().enumerate() {
            if chain.len() >= 3 {
                let (first, last) = (chain[0], chain[chain.len() - 1]);
                outgoing[first].push((state.top[chain[1]], edge));
                incoming[last].push((state.top[chain[chain.len() - 2]], edge));
            }
        }
        let spread = |node: &Placed, ends: &mut Vec<(f64, usize)>, x: f64, out: &mut Vec<(f64, f64)>| {
            ends.sort_by(|a, b| a.0.total_cmp(&b.0));
            let usable = node.height * 0.6;
            for (rank, &(_, edge)) in ends.iter().enumerate() {
                let offset = (rank as f64 + 1.0) / (ends.len() as f64 + 1.0) * usable - usable / 2.0;
                out[edge] = (x, node.center_y() + offset);
            }
        };
        for (node, place) in nodes.iter().enumerate() {
            spread(place, &mut outgoing[node], place.x + place.width, &mut exit);
            spread(place, &mut incoming[node], place.x, &mut entry);
        }
        Self { exit, entry }
    }
}

/// A smooth path through `points`, taken as pairs: each pair is joined by a straight run
/// (through a box), and consecutive pairs by an S-curve with horizontal ends.
fn curve(points: &[(f64, f64)]) -> String {
    let mut path = String::new();
    let (x0, y0) = points[0];
    let _ = write!(path, "M{x0:.1} {y0:.1}");
    for (index, pair) in points.windows(2).enumerate() {
        let ((ax, ay), (bx, by)) = (pair[0], pair[1]);
        if index % 2 == 0 {
            let bend = (bx - ax) / 2.0;
            let _ = write!(
                path,
                " C{:.1} {ay:.1} {:.1} {by:.1} {bx:.1} {by:.1}",
                ax + bend,
                bx - bend
            );
        } else {
            let _ = write!(path, " L{bx:.1} {by:.1}");
        }
    }
    path
}

impl Columns {
    fn add(&mut self, item: Item, size: Size, column: usize) -> usize {
        let id = self.items.len();
        self.items.push(item);
        self.sizes.push(size);
        self.column_of.push(column);
        self.order[column].push(id);
        self.left.push(Vec::new());
        self.right.push(Vec::new());
        self.top.push(0.0);
        id
    }

    /// Barycenter sweeps right and left; keeps the best order seen.
    fn reduce_crossings(&mut self) {
        let mut best = self.order.clone();
        let mut fewest = self.crossings();
        for sweep in 0..ORDERING_SWEEPS {
            if fewest == 0 {
                break;
            }
            let rightward = sweep % 2 == 0;
            let columns: Vec<usize> = if rightward {
                (1..self.order.len()).collect()
            } else {
                (0..self.order.len().saturating_sub(1)).rev().collect()
            };
            for column in columns {
                let position = self.positions();
                let mut keyed: Vec<(f64, usize)> = self.order[column]
                    .iter()
                    .map(|&item| {
                        let neighbours = if rightward {
                            &self.left[item]
                        } else {
                            &self.right[item]
                        };
                        let key = if neighbours.is_empty() {
                            position[item]
                        } else {
                            neighbours.iter().map(|&n| position[n]).sum::<f64>() / neighbours.len() as f64
                        };
                        (key, item)
                    })
                    .collect();
                keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
                self.order[column] = keyed.into_iter().map(|(_, item)| item).collect();
            }
            let crossings = self.crossings();
            if crossings < fewest {
                fewest = crossings;
                best = self.order.clone();
            }
        }
        self.order = best;
    }

    /// Each item's index within its column.
    fn positions(&self) -> Vec<f64> {
        let mut position = vec![0.0; self.items.len()];
        for column in &self.order {
            for (index, &item) in column.iter().enumerate() {
                position[item] = index as f64;
            }
        }
        position
    }

    /// Pairs of links between neighbouring columns that cross.
    fn crossings(&self) -> usize {
        let position = self.positions();
        let mut total = 0;
        for column in &self.order {
            let links: Vec<(f64, f64)> = column
                .iter()
                .flat_map(|&item| self.right[item].iter().map(move |&next| (item, next)))
                .map(|(a, b)| (position[a], position[b]))
                .collect();
            for (index, a) in links.iter().enumerate() {
                total += links[index + 1..]
                    .iter()
                    .filter(|b| (a.0 - b.0) * (a.1 - b.1) < 0.0)
                    .count();
            }
        }
        total
    }

    /// Stacks every column, then repeatedly moves each box toward the mean height of its
    /// neighbours, keeping order and spacing.
    fn position_vertically(&mut self) {
        for column in self.order.clone() {
            let mut y = MARGIN;
            for item in column {
                self.top[item] = y;
                y += self.sizes[item].height + ROW_GAP;
            }
        }
        for sweep in 0..POSITIONING_SWEEPS {
            let columns: Vec<usize> = if sweep % 2 == 0 {
                (0..self.order.len()).collect()
            } else {
                (0..self.order.len()).rev().collect()
            };
            for column in columns {
                let wanted: Vec<f64> = self.order[column]
                    .iter()
                    .map(|&item| {
                        let neighbours: Vec<usize> =
                            self.left[item].iter().chain(&self.right[item]).copied().collect();
                        if neighbours.is_empty() {
                            self.center(item)
                        } else {
                            neighbours.iter().map(|&n| self.center(n)).sum::<f64>() / neighbours.len() as f64
                        }
                    })
                    .collect();
                self.place_column(column, &wanted);
            }
        }
        let lowest = self.top.iter().copied().fold(f64::INFINITY, f64::min);
        if lowest.is_finite() {
            self.top.iter_mut().for_each(|top| *top += MARGIN - lowest);
        }
    }

    fn center(&self, item: usize) -> f64 {
        self.top[item] + self.sizes[item].height / 2.0
    }

    /// Puts the column's boxes as near their wanted centers as order and spacing allow
    /// (least squares), by pooling adjacent violators.
    fn place_column(&mut self, column: usize, wanted_centers: &[f64]) {
        let items = &self.order[column];
        // With o_i the stacked offset of box i, z_i = top_i - o_i must not decrease.
        let mut offsets = Vec::with_capacity(items.len());
        let mut offset = 0.0;
        for &item in items {
            offsets.push(offset);
            offset += self.sizes[item].height + ROW_GAP;
        }
        let targets = items
            .iter()
            .zip(wanted_centers)
            .zip(&offsets)
            .map(|((&item, center), offset)| center - self.sizes[item].height / 2.0 - offset);
        // Blocks of (sum, count), merged while a block's mean exceeds the next one's.
        let mut blocks: Vec<(f64, usize)> = Vec::new();
        for target in targets {
            blocks.push((target, 1));
            while blocks.len() >= 2 {
                let (sum_b, n_b) = blocks[blocks.len() - 1];
                let (sum_a, n_a) = blocks[blocks.len() - 2];
                if sum_a / n_a as f64 <= sum_b / n_b as f64 {
                    break;
                }
                blocks.pop();
                *blocks.last_mut().expect("two blocks were there") = (sum_a + sum_b, n_a + n_b);
            }
        }
        let fitted = blocks
            .iter()
            .flat_map(|&(sum, n)| std::iter::repeat_n(sum / n as f64, n));
        for ((&item, z), offset) in items.iter().zip(fitted).zip(&offsets) {
            self.top[item] = z + offset;
        }
    }
}

/// Which edges to reverse so the graph has no cycle: the back edges of a depth-first search
/// started from the nodes nobody calls (then from any node left).
fn back_edges(nodes: usize, edges: &[EdgeSpec]) -> Vec<bool> {
    #[derive(Clone, Copy, PartialEq)]
    enum Visit {
        New,
        Open,
        Done,
    }
    let mut outgoing: Vec<Vec<usize>> = vec![Vec::new(); nodes];
    let mut has_caller = vec![false; nodes];
    for (index, edge) in edges.iter().enumerate() {
        outgoing[edge.from].push(index);
        has_caller[edge.to] |= edge.from != edge.to;
    }
    let mut state = vec![Visit::New; nodes];
    let mut back = vec![false; edges.len()];
    let roots = (0..nodes).filter(|&n| !has_caller[n]).chain(0..nodes);
    for root in roots {
        if state[root] != Visit::New {
            continue;
        }
        // Iterative DFS: (node, next outgoing edge to look at).
        let mut stack = vec![(root, 0)];
        state[root] = Visit::Open;
        while let Some((node, next)) = stack.last_mut() {
            let node = *node;
            if let Some(&edge) = outgoing[node].get(*next) {
                *next += 1;
                let to = edges[edge].to;
                match state[to] {
                    Visit::Open => back[edge] = true,
                    Visit::New => {
                        state[to] = Visit::Open;
                        stack.push((to, 0));
                    }
                    Visit::Done => {}
                }
            } else {
                state[node] = Visit::Done;
                stack.pop();
            }
        }
    }
    back
}

/// Each node's layer: 0 for nodes without incoming edges, else one more than the deepest
/// caller. `edges` must form no cycle (self-loops are ignored).
fn longest_path_layers(nodes: usize, edges: &[(usize, usize)]) -> Vec<usize> {
    let mut incoming = vec![0usize; nodes];
    let mut outgoing: Vec<Vec<usize>> = vec![Vec::new(); nodes];
    for &(from, to) in edges.iter().filter(|(from, to)| from != to) {
        incoming[to] += 1;
        outgoing[from].push(to);
    }
    let mut layer = vec![0; nodes];
    let mut ready: Vec<usize> = (0..nodes).filter(|&n| incoming[n] == 0).collect();
    while let Some(node) = ready.pop() {
        for &next in &outgoing[node] {
            layer[next] = layer[next].max(layer[node] + 1);
            incoming[next] -= 1;
            if incoming[next] == 0 {
                ready.push(next);
            }
        }
    }
    layer
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE: Size = Size {
        width: 100.0,
        height: 36.0,
    };
    const LABEL: Size = Size {
        width: 120.0,
        height: 30.0,
    };

    fn edge(from: usize, to: usize) -> EdgeSpec {
        EdgeSpec {
            from,
            to,
            label: LABEL,
        }
    }

    fn overlaps(a: &Placed, b: &Placed) -> bool {
        a.x < b.x + b.width && b.x < a.x + a.width && a.y < b.y + b.height && b.y < a.y + a.height
    }

    fn assert_nothing_overlaps(layout: &GraphLayout) {
        let boxes: Vec<Placed> = layout
            .nodes
            .iter()
            .copied()
            .chain(layout.edges.iter().map(|e| e.label))
            .collect();
        for (index, a) in boxes.iter().enumerate() {
            for b in &boxes[index + 1..] {
                assert!(!overlaps(a, b), "{a:?} overlaps {b:?}");
            }
        }
    }

    #[test]
    fn callers_sit_left_of_callees() {
        // gateway → auth, gateway → orders → inventory, and a long edge gateway → inventory.
        let layout = layout(&[NODE; 4], &[edge(0, 1), edge(0, 2), edge(2, 3), edge(0, 3)]);
        let x = |node: usize| layout.nodes[node].x;
        assert!(x(0) < x(1) && x(0) < x(2) && x(2) < x(3));
        assert_eq!(x(1), x(2), "auth and orders share a layer");
        assert!(layout
            .edges
            .iter()
            .all(|e| !e.reversed && e.path.starts_with('M')));
        // Labels sit between their two nodes.
        for (edge, (from, to)) in layout.edges.iter().zip([(0, 1), (0, 2), (2, 3), (0, 3)]) {
            assert!(edge.label.x > x(from) + NODE.width && edge.label.x + LABEL.width < x(to));
        }
        assert_nothing_overlaps(&layout);
        assert!(layout.width > 4.0 * NODE.width && layout.height > 2.0 * NODE.height);
    }

    #[test]
    fn cycles_are_drawn_with_one_edge_reversed() {
        let layout = layout(&[NODE; 3], &[edge(0, 1), edge(1, 2), edge(2, 0), edge(1, 0)]);
        let reversed: Vec<bool> = layout.edges.iter().map(|e| e.reversed).collect();
        assert_eq!(reversed, [false, false, true, true]);
        assert!(layout.nodes[0].x < layout.nodes[1].x && layout.nodes[1].x < layout.nodes[2].x);
        assert_nothing_overlaps(&layout);
    }

    #[test]
    fn ordering_removes_avoidable_crossings() {
        // a → d, b → c, a → c' ... given in an order that crosses when stacked as given.
        let layout = layout(&[NODE; 4], &[edge(0, 3), edge(1, 2)]);
        let y = |node: usize| layout.nodes[node].y;
        assert_eq!(y(0) < y(1), y(3) < y(2), "the two edges do not cross");
        assert_nothing_overlaps(&layout);
    }

    #[test]
    fn many_edges_into_one_column_never_overlap() {
        // Fan-out and fan-in with varied label sizes, plus a cycle.
        let nodes: Vec<Size> = (0..12)
            .map(|i| Size {
                width: 60.0 + 10.0 * i as f64,
                height: 36.0,
            })
            .collect();
        let mut edges: Vec<EdgeSpec> = (1..8).map(|to| edge(0, to)).collect();
        edges.extend((1..8).map(|from| edge(from, 8 + from % 4)));
        edges.push(edge(11, 0));
        for (index, e) in edges.iter_mut().enumerate() {
            e.label.height = 24.0 + (index % 3) as f64 * 8.0;
        }
        let layout = layout(&nodes, &edges);
        assert_nothing_overlaps(&layout);
        assert!(layout.nodes.iter().all(|n| n.y >= MARGIN - 1e-9));
    }

    #[test]
    fn pooling_keeps_order_and_spacing() {
        let mut columns = Columns {
            items: vec![Item::Node(0), Item::Node(1), Item::Node(2)],
            sizes: vec![NODE; 3],
            column_of: vec![0; 3],
            order: vec![vec![0, 1, 2]],
            left: vec![Vec::new(); 3],
            right: vec![Vec::new(); 3],
            top: vec![0.0; 3],
        };
        // All three want the same center: they spread evenly around it.
        columns.place_column(0, &[100.0, 100.0, 100.0]);
        let step = NODE.height + ROW_GAP;
        assert!((columns.top[1] - columns.top[0] - step).abs() < 1e-9);
        assert!((columns.center(1) - 100.0).abs() < 1e-9);
        // Far apart wishes are met exactly.
        columns.place_column(0, &[0.0, 200.0, 400.0]);
        assert!((columns.center(2) - 400.0).abs() < 1e-9);
    }
}
