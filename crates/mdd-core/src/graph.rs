//! The dependency graph between checks: who must pass before whom, and the cycles to reject.

use std::collections::HashMap;

use crate::spec::Check;

/// Checks and their `depends_on` edges, by index into the slice it was built from.
#[derive(Debug, Clone)]
pub struct DependencyGraph {
    /// `dependencies[i]`: the indices of the checks that check `i` depends on.
    dependencies: Vec<Vec<usize>>,
}

impl DependencyGraph {
    /// Builds the graph; dependencies on names not in `checks` are left out (validation reports them).
    pub fn new(checks: &[Check]) -> DependencyGraph {
        let index: HashMap<&str, usize> = checks
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.as_str(), i))
            .collect();
        let dependencies = checks
            .iter()
            .map(|c| {
                let mut deps: Vec<usize> = c
                    .depends_on
                    .iter()
                    .filter_map(|d| index.get(d.as_str()).copied())
                    .collect();
                deps.sort_unstable();
                deps.dedup();
                deps
            })
            .collect();
        DependencyGraph { dependencies }
    }

    pub fn dependencies(&self, check: usize) -> &[usize] {
        &self.dependencies[check]
    }

    pub fn len(&self) -> usize {
        self.dependencies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.dependencies.is_empty()
    }

    /// Every elementary cycle found by a depth-first search, each as the list of checks on it
    /// (`[a, b]` for a → b → a). Each cycle is reported once.
    pub fn cycles(&self) -> Vec<Vec<usize>> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            OnStack,
            Done,
        }
        let mut marks = vec![Mark::New; self.len()];
        let mut cycles = Vec::new();
        for root in 0..self.len() {
            if marks[root] != Mark::New {
                continue;
            }
            // Iterative DFS so that a long dependency chain in a hostile spec cannot overflow the stack.
            let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
            marks[root] = Mark::OnStack;
            while let Some(&mut (node, ref mut next)) = stack.last_mut() {
                if let Some(&dep) = self.dependencies[node].get(*next) {
                    *next += 1;
                    match marks[dep] {
                        Mark::New => {
                            marks[dep] = Mark::OnStack;
                            stack.push((dep, 0));
                        }
                        Mark::OnStack => {
                            let start = stack.iter().position(|&(n, _)| n == dep).unwrap_or(0);
                            cycles.push(stack[start..].iter().map(|&(n, _)| n).collect());
                        }
                        Mark::Done => {}
                    }
                } else {
                    marks[node] = Mark::Done;
                    stack.pop();
                }
            }
        }
        cycles
    }

    /// Checks in an order where every check comes after its dependencies, keeping the original
    /// order otherwise. Checks on a cycle (which a validated spec never has) come last.
    pub fn topological_order(&self) -> Vec<usize> {
        let mut remaining: Vec<usize> = self.dependencies.iter().map(Vec::len).collect();
        let mut dependents = vec![Vec::new(); self.len()];
        for (check, deps) in self.dependencies.iter().enumerate() {
            for &dep in deps {
                dependents[dep].push(check);
            }
        }
        let mut ready: std::collections::BTreeSet<usize> =
            (0..self.len()).filter(|&i| remaining[i] == 0).collect();
        let mut order = Vec::with_capacity(self.len());
        while let Some(check) = ready.pop_first() {
            order.push(check);
            for &dependent in &dependents[check] {
                remaining[dependent] -= 1;
                if remaining[dependent] == 0 {
                    ready.insert(dependent);
                }
            }
        }
        let placed: std::collections::HashSet<usize> = order.iter().copied().collect();
        order.extend((0..self.len()).filter(|i| !placed.contains(i)));
        order
    }
}
