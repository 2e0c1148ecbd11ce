//! The step graph (petgraph): waves by longest-path layering, the critical path, and, when
//! the rules contradict each other, the cycles spelled out edge by edge. Every algorithm here
//! is iterative, so plans of any size cannot overflow the stack.

use std::collections::VecDeque;

use petgraph::Direction;
use petgraph::algo::{kosaraju_scc, toposort};
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;

/// Waves of step indices (each sorted) and the critical path, first step first.
pub(crate) struct Layout {
    pub waves: Vec<Vec<u32>>,
    pub critical_path: Vec<u32>,
}

/// The steps (nodes `0..n`) and edges (weight = index into the caller's edge list).
pub(crate) struct StepGraph {
    g: DiGraph<(), u32, u32>,
}

impl StepGraph {
    pub fn new(n: usize, edges: impl ExactSizeIterator<Item = (u32, u32)>) -> StepGraph {
        let mut g = DiGraph::with_capacity(n, edges.len());
        for _ in 0..n {
            g.add_node(());
        }
        for (i, (from, to)) in edges.enumerate() {
            g.add_edge(
                NodeIndex::new(from as usize),
                NodeIndex::new(to as usize),
                i as u32,
            );
        }
        StepGraph { g }
    }

    /// Waves and critical path, or every cycle as the list of its edges (in path order).
    pub fn layout(&self) -> Result<Layout, Vec<Vec<u32>>> {
        let order = toposort(&self.g, None).map_err(|_| self.cycles())?;
        let n = self.g.node_count();
        let mut wave = vec![0u32; n];
        for &node in &order {
            let w = self
                .g
                .neighbors_directed(node, Direction::Incoming)
                .map(|p| wave[p.index()] + 1)
                .max()
                .unwrap_or(0);
            wave[node.index()] = w;
        }
        let depth = wave.iter().copied().max().map_or(0, |w| w as usize + 1);
        let mut waves: Vec<Vec<u32>> = vec![Vec::new(); depth];
        for (i, &w) in wave.iter().enumerate() {
            waves[w as usize].push(i as u32);
        }
        // The critical path: from the first deepest step back along predecessors one wave up,
        // taking the lowest index at each choice.
        let mut critical_path = Vec::with_capacity(depth);
        if let Some(last) = waves.last().and_then(|w| w.first()) {
            let mut at = *last as usize;
            critical_path.push(at as u32);
            while wave[at] > 0 {
                let want = wave[at] - 1;
                let prev = self
                    .g
                    .neighbors_directed(NodeIndex::new(at), Direction::Incoming)
                    .map(|p| p.index())
                    .filter(|&p| wave[p] == want)
                    .min()
                    .expect("a step in wave w > 0 has a predecessor in wave w - 1");
                critical_path.push(prev as u32);
                at = prev;
            }
            critical_path.reverse();
        }
        Ok(Layout {
            waves,
            critical_path,
        })
    }

    /// One cycle per strongly connected component, as edge indices, lowest step first.
    fn cycles(&self) -> Vec<Vec<u32>> {
        let mut components: Vec<Vec<usize>> = kosaraju_scc(&self.g)
            .into_iter()
            .filter(|c| c.len() > 1)
            .map(|c| {
                let mut c: Vec<usize> = c.into_iter().map(|n| n.index()).collect();
                c.sort_unstable();
                c
            })
            .collect();
        components.sort();
        let n = self.g.node_count();
        let mut member = vec![false; n];
        let mut out = Vec::with_capacity(components.len());
        for comp in components {
            for &v in &comp {
                member[v] = true;
            }
            out.push(self.cycle_through(comp[0], &member));
            for &v in &comp {
                member[v] = false;
            }
        }
        out
    }

    /// The shortest cycle through `start` inside the component marked in `member`.
    fn cycle_through(&self, start: usize, member: &[bool]) -> Vec<u32> {
        let n = self.g.node_count();
        let mut parent: Vec<Option<(usize, u32)>> = vec![None; n];
        let mut queue = VecDeque::from([start]);
        let mut seen = vec![false; n];
        seen[start] = true;
        let mut closing = None;
        'search: while let Some(v) = queue.pop_front() {
            let mut next: Vec<(usize, u32)> = self
                .g
                .edges(NodeIndex::new(v))
                .map(|e| (e.target().index(), *e.weight()))
                .filter(|&(t, _)| member[t])
                .collect();
            next.sort_unstable();
            for (t, w) in next {
                if t == start {
                    closing = Some((v, w));
                    break 'search;
                }
                if !seen[t] {
                    seen[t] = true;
                    parent[t] = Some((v, w));
                    queue.push_back(t);
                }
            }
        }
        let Some((mut v, w)) = closing else {
            return Vec::new();
        };
        let mut path = vec![w];
        while let Some((p, w)) = parent[v] {
            path.push(w);
            v = p;
        }
        path.reverse();
        path
    }
}
