//! The on-disk model repository: one directory per model, each with a
//! `manifest.json` and (when available) an ONNX file, plus a shared labels
//! file. The layout and every manifest field are described in
//! `docs/model-repository.md`.
//!
//! This crate only reads and validates; it never loads ONNX sessions.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

mod labels;

pub use labels::{Label, Labels};

/// Name of the manifest file inside each model directory.
pub const MANIFEST_FILE: &str = "manifest.json";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("model repository {path} could not be read: {source}")]
    ReadDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("manifest {path} could not be read: {source}")]
    ReadManifest {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("manifest {path} is invalid: {source}")]
    ParseManifest {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("manifest {path} is inconsistent: {reason}")]
    InvalidManifest { path: PathBuf, reason: String },
    #[error("labels file {path} is invalid: {reason}")]
    InvalidLabels { path: PathBuf, reason: String },
    #[error("model repository {path} contains no model directories")]
    Empty { path: PathBuf },
}

/// Numeric precision of a served model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    Fp32,
    Int8,
}

impl Precision {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fp32 => "fp32",
            Self::Int8 => "int8",
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether the build produced a usable ONNX file for a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BuildState {
    Available,
    Unavailable,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputSpec {
    pub name: String,
    /// Side of the square input in pixels.
    pub resolution: u32,
    pub layout: String,
}

/// The evaluation preprocessing the weights were measured with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preprocessing {
    /// The centred crop has side `floor(res / (res + crop_padding) * min(w, h))`.
    pub crop_padding: u32,
    pub resize: String,
    /// Subtracted from each RGB channel (0..255 scale).
    pub mean: [f32; 3],
    /// Divisor for each RGB channel after the mean is subtracted.
    pub std: [f32; 3],
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputSpec {
    pub name: String,
    pub classes: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightsInfo {
    pub source: Option<String>,
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quantization {
    pub format: String,
    pub weights: String,
    pub activations: String,
    pub calibration: String,
    pub calibration_images: usize,
}

/// One offline accuracy measurement stored by the evaluation command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub dataset: String,
    pub images: usize,
    /// Fraction in `0..=1`.
    pub top1: f64,
    /// Fraction in `0..=1`.
    pub top5: f64,
    #[serde(default)]
    pub agreement_with_fp32: Option<f64>,
}

/// The parsed `manifest.json` of one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub name: String,
    pub variant: String,
    pub precision: Precision,
    pub state: BuildState,
    #[serde(default)]
    pub unavailable_reason: Option<String>,
    #[serde(default)]
    pub file: Option<String>,
    #[serde(default)]
    pub sha256: Option<String>,
    pub input: InputSpec,
    pub preprocessing: Preprocessing,
    pub output: OutputSpec,
    pub labels: String,
    pub parameters: u64,
    #[serde(default)]
    pub multiply_adds: Option<u64>,
    #[serde(default)]
    pub weights: Option<WeightsInfo>,
    #[serde(default)]
    pub quantization: Option<Quantization>,
    #[serde(default)]
    pub evaluation: Vec<Evaluation>,
}

/// A model directory as found on disk.
#[derive(Debug, Clone)]
pub struct ModelEntry {
    pub manifest: Manifest,
    pub dir: PathBuf,
    /// Absolute path of the ONNX file; `None` when the manifest marks the
    /// model unavailable.
    pub model_path: Option<PathBuf>,
}

/// All manifests of a repository, keyed by model name, and the shared labels.
#[derive(Debug, Clone)]
pub struct Repository {
    pub root: PathBuf,
    pub models: BTreeMap<String, ModelEntry>,
    pub labels: Labels,
}

// === impl Repository ===

impl Repository {
    /// Reads every `*/manifest.json` below `root` and the labels file they
    /// name.
    ///
    /// A manifest that marks its model available but whose ONNX file is
    /// missing is an error, because serving it would fail later and less
    /// clearly. Directories without a manifest are ignored.
    pub fn open(root: impl AsRef<Path>) -> Result<Self, Error> {
        let root = root.as_ref().to_path_buf();
        let read_dir = |source| Error::ReadDir {
            path: root.clone(),
            source,
        };

        let mut models = BTreeMap::new();
        let mut labels_file: Option<String> = None;
        for dirent in fs::read_dir(&root).map_err(read_dir)? {
            let dir = dirent.map_err(read_dir)?.path();
            let manifest_path = dir.join(MANIFEST_FILE);
            if !manifest_path.is_file() {
                continue;
            }

            let entry = read_entry(&dir, &manifest_path)?;
            match &labels_file {
                None => labels_file = Some(entry.manifest.labels.clone()),
                Some(file) if *file != entry.manifest.labels => {
                    return Err(Error::InvalidManifest {
                        path: manifest_path,
                        reason: format!(
                            "labels file {:?} differs from {file:?} used by other models",
                            entry.manifest.labels
                        ),
                    });
                }
                Some(_) => {}
            }
            models.insert(entry.manifest.name.clone(), entry);
        }

        let Some(labels_file) = labels_file else {
            return Err(Error::Empty { path: root });
        };
        let labels = Labels::read(root.join(labels_file))?;
        for entry in models.values() {
            if entry.manifest.output.classes != labels.len() {
                return Err(Error::InvalidManifest {
                    path: entry.dir.join(MANIFEST_FILE),
                    reason: format!(
                        "output has {} classes but the labels file has {}",
                        entry.manifest.output.classes,
                        labels.len()
                    ),
                });
            }
        }

        Ok(Self {
            root,
            models,
            labels,
        })
    }
}

fn read_entry(dir: &Path, manifest_path: &Path) -> Result<ModelEntry, Error> {
    let text = fs::read_to_string(manifest_path).map_err(|source| Error::ReadManifest {
        path: manifest_path.to_path_buf(),
        source,
    })?;
    let manifest: Manifest =
        serde_json::from_str(&text).map_err(|source| Error::ParseManifest {
            path: manifest_path.to_path_buf(),
            source,
        })?;
    let invalid = |reason: String| Error::InvalidManifest {
        path: manifest_path.to_path_buf(),
        reason,
    };

    let dir_name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    if manifest.name != dir_name {
        return Err(invalid(format!(
            "name {:?} does not match its directory {dir_name:?}",
            manifest.name
        )));
    }
    if manifest.input.resolution == 0 || manifest.input.resolution > 1024 {
        return Err(invalid(format!(
            "input resolution {} is outside 1..=1024",
            manifest.input.resolution
        )));
    }

    let model_path = match (manifest.state, &manifest.file) {
        (BuildState::Available, Some(file)) => {
            let path = dir.join(file);
            if !path.is_file() {
                return Err(invalid(format!("model file {} is missing", path.display())));
            }
            Some(path)
        }
        (BuildState::Available, None) => {
            return Err(invalid("state is available but no file is named".into()));
        }
        (BuildState::Unavailable, _) => None,
    };

    Ok(ModelEntry {
        manifest,
        dir: dir.to_path_buf(),
        model_path,
    })
}

#[cfg(test)]
mod tests;
