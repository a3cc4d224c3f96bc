//! The class names shared by every model of a repository.

use std::{fs, path::Path};

use crate::Error;

/// One ImageNet class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    /// WordNet id, for example `n01440764`.
    pub wnid: String,
    /// Short human-readable name, for example `tench`.
    pub name: String,
}

/// Class labels indexed by the model's output position.
#[derive(Debug, Clone, Default)]
pub struct Labels {
    labels: Vec<Label>,
}

// === impl Labels ===

impl Labels {
    /// Reads a TSV file with a header line and rows `index<TAB>wnid<TAB>name`,
    /// whose indices must be `0, 1, 2, …` in order.
    pub fn read(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let invalid = |reason: String| Error::InvalidLabels {
            path: path.to_path_buf(),
            reason,
        };
        let text = fs::read_to_string(path).map_err(|e| invalid(e.to_string()))?;

        let mut labels = Vec::new();
        for (line_no, line) in text.lines().enumerate().skip(1) {
            if line.trim().is_empty() {
                continue;
            }
            let mut fields = line.splitn(3, '\t');
            let (Some(index), Some(wnid), Some(name)) =
                (fields.next(), fields.next(), fields.next())
            else {
                return Err(invalid(format!(
                    "line {} has fewer than 3 fields",
                    line_no + 1
                )));
            };
            if index.parse::<usize>().ok() != Some(labels.len()) {
                return Err(invalid(format!(
                    "line {} has index {index:?}, expected {}",
                    line_no + 1,
                    labels.len()
                )));
            }
            labels.push(Label {
                wnid: wnid.to_string(),
                name: name.trim_end().to_string(),
            });
        }

        if labels.is_empty() {
            return Err(invalid("no labels".into()));
        }
        Ok(Self { labels })
    }

    pub fn from_vec(labels: Vec<Label>) -> Self {
        Self { labels }
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn get(&self, index: usize) -> Option<&Label> {
        self.labels.get(index)
    }

    /// Finds the class index of a WordNet id.
    pub fn index_of_wnid(&self, wnid: &str) -> Option<usize> {
        self.labels.iter().position(|l| l.wnid == wnid)
    }
}
