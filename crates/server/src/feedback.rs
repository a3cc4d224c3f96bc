//! Ground truth from clients: the true class of classified images, sent with
//! the classify request or later by request id, scored against the model's
//! top-5 for online accuracy.
//!
//! [`FeedbackStore`] remembers the top-5 classes of recent successful
//! classify requests by request id, for a bounded time and count, so that a
//! later `POST /v1/feedback` can score them. Each request id is scored at
//! most once.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
    time::Instant,
};

use effnet_repository::Labels;

use crate::{config::FeedbackConfig, error::ServiceError};

/// The five best class indices of one image, best first.
pub type Top5 = [u16; 5];

/// Recent classify results by request id.
pub struct FeedbackStore {
    config: FeedbackConfig,
    inner: Mutex<Inner>,
}

struct Inner {
    entries: HashMap<String, Entry>,
    /// Request ids in insertion order with the generation they were inserted
    /// with, for eviction by age and count. A re-inserted id leaves a stale
    /// pair behind, which eviction skips by comparing generations.
    order: VecDeque<(String, u64)>,
    next_generation: u64,
}

struct Entry {
    model: usize,
    top5: Vec<Top5>,
    inserted: Instant,
    generation: u64,
    scored: bool,
}

/// A stored result ready for scoring.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredResult {
    /// Registry index of the model that classified the images.
    pub model: usize,
    pub top5: Vec<Top5>,
}

/// Top-1 and top-5 hits of one scored request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Score {
    pub images: usize,
    pub top1_hits: usize,
    pub top5_hits: usize,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FeedbackError {
    #[error(
        "request id {request_id:?} not found: feedback is accepted for successful classify \
         requests of the last {ttl_s} s (at most {capacity} of them)"
    )]
    NotFound {
        request_id: String,
        ttl_s: f64,
        capacity: usize,
    },
    #[error(
        "request id {request_id:?} expired: feedback is accepted for {ttl_s} s after the response"
    )]
    Expired { request_id: String, ttl_s: f64 },
    #[error("feedback for request id {request_id:?} was already counted")]
    AlreadyCounted { request_id: String },
    #[error(
        "request id {request_id:?} classified {images} images but {classes} true classes were sent"
    )]
    ClassCount {
        request_id: String,
        images: usize,
        classes: usize,
    },
}

// === impl FeedbackStore ===

impl FeedbackStore {
    pub fn new(config: FeedbackConfig) -> Self {
        Self {
            config,
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                order: VecDeque::new(),
                next_generation: 0,
            }),
        }
    }

    /// Remembers a successful result. A request id that is already stored
    /// (clients may reuse `x-request-id`) is replaced.
    pub fn insert(&self, request_id: &str, model: usize, top5: Vec<Top5>) {
        if self.config.capacity == 0 {
            return;
        }
        let now = Instant::now();
        let mut inner = self.lock();
        let generation = inner.next_generation;
        inner.next_generation += 1;

        inner.entries.insert(
            request_id.to_string(),
            Entry {
                model,
                top5,
                inserted: now,
                generation,
                scored: false,
            },
        );
        inner.order.push_back((request_id.to_string(), generation));
        self.evict(&mut inner, now);
    }

    /// Takes the result of `request_id` for scoring and marks it scored, so
    /// that a second call fails with [`FeedbackError::AlreadyCounted`].
    /// `classes` is the number of true classes sent, which must be 1 or the
    /// number of images.
    pub fn take(&self, request_id: &str, classes: usize) -> Result<StoredResult, FeedbackError> {
        let now = Instant::now();
        let mut inner = self.lock();
        self.evict_expired_front(&mut inner, now);

        let ttl_s = self.config.ttl.as_secs_f64();
        let Some(entry) = inner.entries.get_mut(request_id) else {
            return Err(FeedbackError::NotFound {
                request_id: truncate(request_id),
                ttl_s,
                capacity: self.config.capacity,
            });
        };
        if now.duration_since(entry.inserted) > self.config.ttl {
            return Err(FeedbackError::Expired {
                request_id: truncate(request_id),
                ttl_s,
            });
        }
        if entry.scored {
            return Err(FeedbackError::AlreadyCounted {
                request_id: truncate(request_id),
            });
        }
        if classes != 1 && classes != entry.top5.len() {
            return Err(FeedbackError::ClassCount {
                request_id: truncate(request_id),
                images: entry.top5.len(),
                classes,
            });
        }

        entry.scored = true;
        Ok(StoredResult {
            model: entry.model,
            top5: entry.top5.clone(),
        })
    }

    /// Marks `request_id` scored, after its true class came with the request.
    pub fn mark_scored(&self, request_id: &str) {
        if let Some(entry) = self.lock().entries.get_mut(request_id) {
            entry.scored = true;
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().entries.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Drops entries beyond the capacity, then expired ones, oldest first.
    fn evict(&self, inner: &mut Inner, now: Instant) {
        while inner.entries.len() > self.config.capacity {
            let Some((id, generation)) = inner.order.pop_front() else {
                break;
            };
            inner.remove_if_current(&id, generation);
        }
        self.evict_expired_front(inner, now);
    }

    /// Drops expired entries from the front of the insertion order.
    ///
    /// NOTE: an expired entry behind a stale pair of a replaced id stays
    /// until that pair reaches the front; `take` still reports it expired.
    fn evict_expired_front(&self, inner: &mut Inner, now: Instant) {
        while let Some((id, generation)) = inner.order.front() {
            let expired = match inner.entries.get(id) {
                Some(entry) if entry.generation == *generation => {
                    now.duration_since(entry.inserted) > self.config.ttl
                }
                // A stale pair: the id was replaced or already removed.
                _ => true,
            };
            if !expired {
                break;
            }
            let (id, generation) = inner.order.pop_front().expect("front exists");
            inner.remove_if_current(&id, generation);
        }
    }
}

// === impl Inner ===

impl Inner {
    fn remove_if_current(&mut self, id: &str, generation: u64) {
        if self
            .entries
            .get(id)
            .is_some_and(|e| e.generation == generation)
        {
            self.entries.remove(id);
        }
    }
}

/// Scores images against their true classes: one class for every image, or
/// one class per image.
pub fn score(top5: &[Top5], classes: &[usize]) -> Vec<(bool, bool)> {
    top5.iter()
        .enumerate()
        .map(|(image, best)| {
            let truth = if classes.len() == 1 {
                classes[0]
            } else {
                classes[image]
            };
            let top1 = usize::from(best[0]) == truth;
            let top5 = best.iter().any(|&c| usize::from(c) == truth);
            (top1, top5)
        })
        .collect()
}

/// Resolves the true classes sent by a client. Each is an index `0..classes`
/// (a JSON number or a string of digits) or a WordNet id such as
/// `n01440764`, and a JSON array sends one per image.
pub fn resolve_classes(
    value: &serde_json::Value,
    labels: &Labels,
) -> Result<Vec<usize>, ServiceError> {
    match value {
        serde_json::Value::Array(values) if values.is_empty() => Err(ServiceError::invalid(
            "invalid_true_class",
            "true_class is an empty array; send one class, or one per image",
        )),
        serde_json::Value::Array(values) => {
            values.iter().map(|v| resolve_class(v, labels)).collect()
        }
        single => Ok(vec![resolve_class(single, labels)?]),
    }
}

fn resolve_class(value: &serde_json::Value, labels: &Labels) -> Result<usize, ServiceError> {
    let index = match value {
        serde_json::Value::Number(number) => number.as_u64().map(|n| n as usize),
        serde_json::Value::String(text)
            if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) =>
        {
            text.parse().ok()
        }
        serde_json::Value::String(wnid) => labels.index_of_wnid(wnid),
        _ => None,
    };
    index.filter(|&i| i < labels.len()).ok_or_else(|| {
        let shown: String = value.to_string().chars().take(64).collect();
        ServiceError::invalid(
            "invalid_true_class",
            format!(
                "invalid true_class {shown}: expected a class index from 0 to {} or a WordNet id such as n01440764",
                labels.len().saturating_sub(1)
            ),
        )
    })
}

fn truncate(request_id: &str) -> String {
    request_id.chars().take(128).collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use effnet_repository::Label;
    use serde_json::json;

    use super::*;

    fn store(ttl: Duration, capacity: usize) -> FeedbackStore {
        FeedbackStore::new(FeedbackConfig { ttl, capacity })
    }

    fn labels() -> Labels {
        Labels::from_vec(
            ["n01440764", "n01443537", "n01484850"]
                .into_iter()
                .map(|wnid| Label {
                    wnid: wnid.to_string(),
                    name: wnid.to_string(),
                })
                .collect(),
        )
    }

    const TOP5: Top5 = [3, 1, 4, 5, 9];

    #[test]
    fn take_counts_once() {
        let store = store(Duration::from_secs(60), 10);
        store.insert("a", 2, vec![TOP5]);

        let first = store.take("a", 1);
        let second = store.take("a", 1);

        assert_eq!(
            first,
            Ok(StoredResult {
                model: 2,
                top5: vec![TOP5]
            })
        );
        assert!(
            matches!(second, Err(FeedbackError::AlreadyCounted { .. })),
            "{second:?}"
        );
    }

    #[test]
    fn take_unknown_is_not_found() {
        let store = store(Duration::from_secs(60), 10);

        let error = store.take("nope", 1).unwrap_err();

        assert!(matches!(error, FeedbackError::NotFound { .. }));
        assert!(error.to_string().contains("\"nope\" not found"), "{error}");
    }

    #[test]
    fn take_after_ttl_is_expired() {
        let store = store(Duration::from_millis(1), 10);
        store.insert("a", 0, vec![TOP5]);
        std::thread::sleep(Duration::from_millis(20));

        let error = store.take("a", 1).unwrap_err();

        // The front eviction removes it before the lookup.
        assert!(matches!(error, FeedbackError::NotFound { .. }), "{error:?}");
        assert_eq!(store.len(), 0);
    }

    #[test]
    fn capacity_evicts_oldest() {
        let store = store(Duration::from_secs(60), 2);
        for id in ["a", "b", "c"] {
            store.insert(id, 0, vec![TOP5]);
        }

        assert_eq!(store.len(), 2);
        assert!(store.take("a", 1).is_err());
        assert!(store.take("c", 1).is_ok());
    }

    #[test]
    fn reinserted_id_survives_stale_pair() {
        let store = store(Duration::from_secs(60), 2);
        store.insert("a", 0, vec![TOP5]);
        store.insert("a", 1, vec![TOP5]);
        store.insert("b", 0, vec![TOP5]);

        assert_eq!(store.take("a", 1).map(|r| r.model), Ok(1));
    }

    #[test]
    fn zero_capacity_stores_nothing() {
        let store = store(Duration::from_secs(60), 0);
        store.insert("a", 0, vec![TOP5]);

        assert_eq!(store.len(), 0);
    }

    #[test]
    fn class_count_must_match() {
        let store = store(Duration::from_secs(60), 10);
        store.insert("a", 0, vec![TOP5, TOP5]);

        let error = store.take("a", 3).unwrap_err();

        assert!(matches!(
            error,
            FeedbackError::ClassCount {
                images: 2,
                classes: 3,
                ..
            }
        ));
        assert!(store.take("a", 2).is_ok());
    }

    #[test]
    fn score_top1_and_top5() {
        let scores = score(&[TOP5, TOP5, TOP5], &[3, 9, 7]);

        assert_eq!(scores, vec![(true, true), (false, true), (false, false)]);
    }

    #[test]
    fn score_one_class_for_all() {
        assert_eq!(
            score(&[TOP5, TOP5], &[1]),
            vec![(false, true), (false, true)]
        );
    }

    #[test]
    fn resolve_index_wnid_and_digits() {
        let labels = labels();

        assert_eq!(resolve_classes(&json!(2), &labels).unwrap(), vec![2]);
        assert_eq!(resolve_classes(&json!("1"), &labels).unwrap(), vec![1]);
        assert_eq!(
            resolve_classes(&json!("n01443537"), &labels).unwrap(),
            vec![1]
        );
        assert_eq!(
            resolve_classes(&json!([0, "n01484850"]), &labels).unwrap(),
            vec![0, 2]
        );
    }

    #[test]
    fn resolve_rejects_invalid() {
        let labels = labels();

        for value in [
            json!(3),
            json!(-1),
            json!(1.5),
            json!("n00000000"),
            json!(null),
            json!([]),
        ] {
            let error = resolve_classes(&value, &labels).unwrap_err();
            assert_eq!(error.code, "invalid_true_class", "{value}");
        }
    }
}
