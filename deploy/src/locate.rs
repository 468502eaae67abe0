//! Where each node of a YAML document is: a map from dotted paths (`providers.aws.region`,
//! `queues.0.name`) to line and column, so every problem found after parsing can be reported at
//! its place in the file.

use std::collections::HashMap;

use yaml_rust2::{
    parser::{Event, MarkedEventReceiver, Parser},
    scanner::Marker,
};

/// A 1-based position in the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub column: usize,
}

enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, index: usize },
}

/// Positions of every key and value, by path.
#[derive(Default)]
pub struct Locations {
    positions: HashMap<String, Position>,
    stack: Vec<Frame>,
}

fn join(parent: &str, child: &str) -> String {
    if parent.is_empty() { child.to_owned() } else { format!("{parent}.{child}") }
}

impl Locations {
    /// Indexes `text`; a document YAML cannot parse yields an empty index (the parser reports it).
    pub fn of(text: &str) -> Self {
        let mut locations = Locations::default();
        let mut parser = Parser::new_from_str(text);
        let _ = parser.load(&mut locations, false);
        locations
    }

    /// The position of `path`, or of its nearest indexed ancestor.
    pub fn find(&self, path: &str) -> Position {
        let mut path = path;
        loop {
            if let Some(position) = self.positions.get(path) {
                return *position;
            }
            match path.rfind('.') {
                Some(cut) => path = &path[..cut],
                None => return self.positions.get("").copied().unwrap_or(Position { line: 1, column: 1 }),
            }
        }
    }

    /// The path a node starting now gets, advancing the enclosing sequence or mapping.
    fn next_path(&mut self, mark: Marker, is_scalar: Option<&str>) -> Option<String> {
        let position = Position { line: mark.line(), column: mark.col() + 1 };
        match self.stack.last_mut() {
            None => {
                self.positions.entry(String::new()).or_insert(position);
                Some(String::new())
            }
            Some(Frame::Seq { path, index }) => {
                let child = join(path, &index.to_string());
                *index += 1;
                self.positions.insert(child.clone(), position);
                Some(child)
            }
            Some(Frame::Map { path, key }) => match key.take() {
                // A scalar in key position names the next value.
                None => {
                    let name = is_scalar.unwrap_or("?").to_owned();
                    self.positions.insert(join(path, &name), position);
                    *key = Some(name);
                    None
                }
                Some(name) => Some(join(path, &name)),
            },
        }
    }
}

impl MarkedEventReceiver for Locations {
    fn on_event(&mut self, event: Event, mark: Marker) {
        match event {
            Event::Scalar(value, ..) => {
                let _ = self.next_path(mark, Some(&value));
            }
            Event::Alias(_) => {
                let _ = self.next_path(mark, Some("*alias"));
            }
            Event::MappingStart(..) => {
                let path = self.next_path(mark, None).unwrap_or_default();
                self.stack.push(Frame::Map { path, key: None });
            }
            Event::SequenceStart(..) => {
                let path = self.next_path(mark, None).unwrap_or_default();
                self.stack.push(Frame::Seq { path, index: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_lines_and_columns() {
        let text = "name: shop\nproviders:\n  aws:\n    region: us-east-1\nqueues:\n  - name: orders\n  - name: dlq\n";
        let locations = Locations::of(text);
        assert_eq!(locations.find("name"), Position { line: 1, column: 1 });
        assert_eq!(locations.find("providers.aws.region"), Position { line: 4, column: 5 });
        // Inside a sequence item the parser marks a key at its ':'; the line is what matters.
        assert_eq!(locations.find("queues.1.name").line, 7);
        assert_eq!(locations.find("queues.1.missing").line, 7);
    }
}
