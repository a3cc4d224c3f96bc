//! The set of models this server serves: every manifest of the repository,
//! its load state, and the name resolution every API uses.
//!
//! Model names from requests are only ever compared against this set; they
//! never reach the filesystem and never become metric labels.

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
    time::Duration,
};

use effnet_engine::ModelSession;
use effnet_repository::{Manifest, Precision};

use crate::{
    config::ModelSettings,
    error::{ErrorKind, ServiceError},
};

/// Life-cycle state of a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelState {
    Loading,
    /// Loaded and warmed up.
    Ready,
    /// Cannot serve; the reason is shown to clients.
    Unavailable(String),
    /// Turned off in the configuration.
    Disabled,
}

impl ModelState {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Loading => "loading",
            Self::Ready => "ready",
            Self::Unavailable(_) => "unavailable",
            Self::Disabled => "disabled",
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            Self::Unavailable(reason) => Some(reason),
            _ => None,
        }
    }
}

/// One model of the repository.
pub struct Model {
    /// Position in the registry; also the scheduler's model id.
    pub index: usize,
    pub manifest: Manifest,
    pub settings: ModelSettings,
    state: RwLock<ModelState>,
    session: RwLock<Option<Arc<ModelSession>>>,
    load_duration: RwLock<Option<Duration>>,
}

/// Every model of the repository, in name order.
pub struct ModelRegistry {
    models: Vec<Arc<Model>>,
    by_name: BTreeMap<String, usize>,
    default_precision: Precision,
}

// === impl Model ===

impl Model {
    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    pub fn state(&self) -> ModelState {
        self.state
            .read()
            .expect("model state lock poisoned")
            .clone()
    }

    pub fn load_duration(&self) -> Option<Duration> {
        *self
            .load_duration
            .read()
            .expect("model state lock poisoned")
    }

    /// Returns the loaded session, or the reason the model cannot serve.
    pub fn session(&self) -> Result<Arc<ModelSession>, ServiceError> {
        let state = self.state();
        match (
            &state,
            self.session
                .read()
                .expect("model state lock poisoned")
                .as_ref(),
        ) {
            (ModelState::Ready, Some(session)) => Ok(session.clone()),
            _ => Err(self.unavailable_error(&state)),
        }
    }

    pub fn set_ready(&self, session: Arc<ModelSession>, load_duration: Duration) {
        *self.session.write().expect("model state lock poisoned") = Some(session);
        *self
            .load_duration
            .write()
            .expect("model state lock poisoned") = Some(load_duration);
        *self.state.write().expect("model state lock poisoned") = ModelState::Ready;
    }

    pub fn set_unavailable(&self, reason: String) {
        *self.state.write().expect("model state lock poisoned") = ModelState::Unavailable(reason);
    }

    fn unavailable_error(&self, state: &ModelState) -> ServiceError {
        let detail = match state {
            ModelState::Loading => "is still loading".to_string(),
            ModelState::Unavailable(reason) => format!("is unavailable: {reason}"),
            ModelState::Disabled => "is disabled in the server configuration".to_string(),
            ModelState::Ready => "has no session".to_string(),
        };
        ServiceError::new(
            ErrorKind::Unavailable,
            "model_unavailable",
            format!("model {} {detail}", self.name()),
        )
    }
}

// === impl ModelRegistry ===

impl ModelRegistry {
    /// Builds the registry from the repository's manifests. Models marked
    /// unavailable by the build or disabled by the configuration keep that
    /// state; the others start as loading.
    pub fn new(
        manifests: impl IntoIterator<Item = Manifest>,
        settings: impl Fn(&str) -> ModelSettings,
        default_precision: Precision,
    ) -> Self {
        let mut models = Vec::new();
        let mut by_name = BTreeMap::new();
        for (index, manifest) in manifests.into_iter().enumerate() {
            let settings = settings(&manifest.name);
            let state = if !settings.enabled {
                ModelState::Disabled
            } else if manifest.state == effnet_repository::BuildState::Unavailable {
                ModelState::Unavailable(
                    manifest
                        .unavailable_reason
                        .clone()
                        .unwrap_or_else(|| "the build produced no model file".into()),
                )
            } else {
                ModelState::Loading
            };
            by_name.insert(manifest.name.clone(), index);
            models.push(Arc::new(Model {
                index,
                manifest,
                settings,
                state: RwLock::new(state),
                session: RwLock::new(None),
                load_duration: RwLock::new(None),
            }));
        }
        Self {
            models,
            by_name,
            default_precision,
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Model>> {
        self.models.iter()
    }

    pub fn get(&self, index: usize) -> Option<&Arc<Model>> {
        self.models.get(index)
    }

    /// Resolves a requested name: an exact model name, or a variant alias
    /// such as `efficientnet-lite0` that means the default precision.
    pub fn resolve(&self, name: &str) -> Result<&Arc<Model>, ServiceError> {
        if let Some(&index) = self.by_name.get(name) {
            return Ok(&self.models[index]);
        }
        let aliased = format!("{name}-{}", self.default_precision);
        if let Some(&index) = self.by_name.get(&aliased) {
            return Ok(&self.models[index]);
        }
        Err(self.not_found(name))
    }

    /// Resolves a name to a model that can serve now.
    pub fn ready(&self, name: &str) -> Result<(Arc<Model>, Arc<ModelSession>), ServiceError> {
        let model = self.resolve(name)?;
        let session = model.session()?;
        Ok((model.clone(), session))
    }

    /// Returns whether every model that can be served has finished loading.
    pub fn all_loaded(&self) -> bool {
        self.models.iter().all(|m| m.state() != ModelState::Loading)
    }

    /// Lists the alias names (`efficientnet-lite0`) with the model each resolves to.
    pub fn aliases(&self) -> Vec<(String, String)> {
        let suffix = format!("-{}", self.default_precision);
        self.by_name
            .keys()
            .filter_map(|name| {
                let alias = name.strip_suffix(&suffix)?;
                Some((alias.to_string(), name.clone()))
            })
            .collect()
    }

    fn not_found(&self, name: &str) -> ServiceError {
        // NOTE: the requested name is echoed back only after truncation, so a
        // client cannot make the server return megabytes of its own input.
        let shown: String = name.chars().take(64).collect();
        let available: Vec<&str> = self.by_name.keys().map(String::as_str).collect();
        ServiceError::new(
            ErrorKind::NotFound,
            "model_not_found",
            format!(
                "model {shown:?} not found; available models: {}",
                available.join(", ")
            ),
        )
    }
}
