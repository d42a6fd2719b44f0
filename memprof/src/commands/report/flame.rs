//! Flame graphs as inline SVG (icicles: the root on top, callees below). Each frame is a
//! `<g class="frame">` carrying its function (`data-name`), its place as fractions of the whole
//! (`data-x`, `data-w`), its depth and bytes, so the page's script can search and zoom without
//! anything else; a differential graph is the last profile's shape coloured by each frame's
//! change since the first (red grew, blue shrank).
use std::{collections::HashMap, fmt::Write};

use super::page::{esc, mb};
use crate::capture::summary::Summary;

/// Pixels of the SVG's coordinate system (it scales to the page's width).
pub const WIDTH: f64 = 1200.0;
const ROW: f64 = 17.0;
/// Frames narrower than this fraction of the whole (a tenth of a pixel unzoomed) are left
/// out, and past `FRAMES_MAX` the narrowest go first: a page of a service with tens of
/// thousands of stacks stays a few megabytes.
const NARROWEST: f64 = 1.0 / 12_000.0;
const FRAMES_MAX: usize = 8_000;

/// One function on one call path: its in-use bytes in the last profile and in the first.
#[derive(Debug, Default)]
pub struct Node {
    pub name: String,
    pub bytes: i64,
    pub before: i64,
    children: Vec<Node>,
    index: HashMap<String, usize>,
}

impl Node {
    fn child(&mut self, name: &str) -> &mut Node {
        let i = match self.index.get(name) {
            Some(&i) => i,
            None => {
                self.children.push(Node {
                    name: name.to_string(),
                    ..Node::default()
                });
                self.index.insert(name.to_string(), self.children.len() - 1);
                self.children.len() - 1
            }
        };
        &mut self.children[i]
    }

    #[cfg(test)]
    fn find(&self, name: &str) -> Option<&Node> {
        self.index.get(name).map(|&i| &self.children[i])
    }
}

/// The call tree of `last`, with `first`'s bytes on the frames both have.
pub fn tree(last: &Summary, first: Option<&Summary>) -> Node {
    let mut root = Node {
        name: "all".into(),
        ..Node::default()
    };
    for (path, bytes) in last.paths() {
        let bytes = bytes.max(0);
        root.bytes = root.bytes.saturating_add(bytes);
        let mut at = &mut root;
        for f in path.iter().rev() {
            at = at.child(f);
            at.bytes = at.bytes.saturating_add(bytes);
        }
    }
    for (path, bytes) in first.into_iter().flat_map(Summary::paths) {
        let bytes = bytes.max(0);
        root.before = root.before.saturating_add(bytes);
        let mut at = &mut root;
        for f in path.iter().rev() {
            match at.index.get(&**f) {
                Some(&i) => at = &mut at.children[i],
                None => break,
            }
            at.before = at.before.saturating_add(bytes);
        }
    }
    sort(&mut root);
    root
}

/// Children widest first, so the biggest consumer is on the left.
fn sort(n: &mut Node) {
    n.children
        .sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.name.cmp(&b.name)));
    n.index = n
        .children
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.clone(), i))
        .collect();
    n.children.iter_mut().for_each(sort);
}

/// The SVG; `diff` colours by change since the first profile.
pub fn svg(root: &Node, id: &str, diff: bool) -> String {
    let total = root.bytes.max(1) as f64;
    let biggest_change = if diff {
        max_change(root).max(1) as f64
    } else {
        1.0
    };
    let narrowest = narrowest_kept(root, total);
    let mut frames = String::new();
    let mut depth_max = 0;
    let mut stack = vec![(root, 0.0f64, 0usize)];
    while let Some((n, x, depth)) = stack.pop() {
        let w = n.bytes as f64 / total;
        if w < narrowest {
            continue;
        }
        depth_max = depth_max.max(depth);
        let fill = if diff {
            diff_colour(n.bytes.saturating_sub(n.before) as f64 / biggest_change)
        } else {
            colour(&n.name)
        };
        let change = n.bytes.saturating_sub(n.before);
        let title = if diff {
            format!(
                "{}: {} (was {}, {}{})",
                n.name,
                mb(n.bytes),
                mb(n.before),
                if change >= 0 { "+" } else { "−" },
                mb(change.saturating_abs())
            )
        } else {
            format!("{}: {} ({:.1} %)", n.name, mb(n.bytes), 100.0 * w)
        };
        let (px, pw, py) = (x * WIDTH, w * WIDTH, depth as f64 * ROW);
        let _ = write!(
            frames,
            r#"<g class="frame" data-name="{name}" data-x="{x:.6}" data-w="{w:.6}" data-d="{depth}"{change}><title>{title}</title><rect x="{px:.2}" y="{py}" width="{pw:.2}" height="{h}" fill="{fill}"/><text x="{tx:.2}" y="{ty}">{label}</text></g>"#,
            name = esc(&n.name),
            change = if diff {
                format!(r#" data-change="{change}""#)
            } else {
                String::new()
            },
            title = esc(&title),
            h = ROW - 1.0,
            tx = px + 3.0,
            ty = py + ROW - 5.0,
            label = esc(&fit(&n.name, pw)),
        );
        // Children left to right from this frame's left edge.
        let mut cx = x;
        let mut next = Vec::new();
        for c in &n.children {
            next.push((c, cx, depth + 1));
            cx += c.bytes as f64 / total;
        }
        stack.extend(next.into_iter().rev());
    }
    let height = (depth_max + 1) as f64 * ROW;
    format!(
        r#"<svg class="flame{cls}" id="{id}" viewBox="0 0 {WIDTH} {height}" width="100%" data-total="{total}" xmlns="http://www.w3.org/2000/svg">{frames}</svg>"#,
        cls = if diff { " diff" } else { "" },
        id = esc(id),
        total = root.bytes,
    )
}

/// The narrowest width kept: `NARROWEST`, or wider where more than `FRAMES_MAX` frames are
/// at least that wide (a callee is never wider than its caller: what is kept is a tree).
fn narrowest_kept(root: &Node, total: f64) -> f64 {
    let mut widths = Vec::new();
    let mut stack = vec![root];
    while let Some(n) = stack.pop() {
        let w = n.bytes as f64 / total;
        if w >= NARROWEST {
            widths.push(w);
            stack.extend(&n.children);
        }
    }
    if widths.len() <= FRAMES_MAX {
        return NARROWEST;
    }
    widths.sort_unstable_by(|a, b| b.total_cmp(a));
    // Strictly wider than the first one left out.
    widths[FRAMES_MAX].next_up()
}

/// As much of `name` as fits in `width` pixels (the page's script redoes it on zoom).
fn fit(name: &str, width: f64) -> String {
    let room = ((width - 6.0) / 7.0).floor();
    if room < 3.0 {
        return String::new();
    }
    let room = room as usize;
    if name.chars().count() <= room {
        name.to_string()
    } else {
        let mut s: String = name.chars().take(room - 2).collect();
        s.push_str("..");
        s
    }
}

fn max_change(n: &Node) -> i64 {
    n.children
        .iter()
        .map(max_change)
        .fold(n.bytes.saturating_sub(n.before).saturating_abs(), i64::max)
}

/// Warm colours, the same for the same function on every graph.
fn colour(name: &str) -> String {
    let h = name.bytes().fold(2166136261u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(16777619)
    });
    format!(
        "hsl({}, {}%, {}%)",
        5 + h % 45,
        60 + (h >> 8) % 30,
        50 + (h >> 16) % 15
    )
}

/// White for no change, deeper red the more a frame grew, blue the more it shrank.
fn diff_colour(change: f64) -> String {
    let strength = (change.abs().sqrt() * 100.0).round().clamp(0.0, 100.0);
    let hue = if change >= 0.0 { 0 } else { 220 };
    format!("hsl({hue}, {strength}%, {}%)", 95.0 - strength * 0.4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tree_sums_paths_and_the_svg_carries_frames_escaped() {
        let last = Summary::from_paths(&[
            (&["main.leak", "main.main"], 300),
            (&["<script>", "main.main"], 100),
        ]);
        let first = Summary::from_paths(&[(&["main.leak", "main.main"], 100)]);
        let root = tree(&last, Some(&first));
        assert_eq!((root.bytes, root.before), (400, 100));
        let main = root.find("main.main").unwrap();
        assert_eq!(main.children[0].name, "main.leak", "widest first");
        assert_eq!(main.find("main.leak").unwrap().before, 100);
        let svg = svg(&root, "f0", true);
        assert!(svg.contains(r#"data-name="main.leak""#), "{svg}");
        assert!(
            svg.contains("&lt;script&gt;") && !svg.contains("<script>"),
            "{svg}"
        );
        assert!(svg.contains(r#"class="flame diff""#));
    }

    #[test]
    fn a_graph_of_many_stacks_keeps_the_widest_frames() {
        let names: Vec<[String; 2]> = (0..10_000)
            .map(|i| [format!("leaf{i}"), format!("caller{i}")])
            .collect();
        let paths: Vec<([&str; 2], i64)> = names
            .iter()
            .enumerate()
            .map(|(i, [a, b])| ([a.as_str(), b.as_str()], 1000 + i as i64))
            .collect();
        let paths: Vec<(&[&str], i64)> = paths.iter().map(|(p, b)| (&p[..], *b)).collect();
        let root = tree(&Summary::from_paths(&paths), None);
        let svg = svg(&root, "f", false);
        let frames = svg.matches(r#"class="frame""#).count();
        assert!(
            (7_000..=FRAMES_MAX + 1).contains(&frames),
            "{frames} frames"
        );
        assert!(
            svg.contains(r#"data-name="leaf9999""#),
            "the widest is kept"
        );
        assert!(
            !svg.contains(r#"data-name="leaf5000""#),
            "the narrow ones go first"
        );
    }
}
