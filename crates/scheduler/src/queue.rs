//! Per-model queues and batch formation.

use std::{collections::VecDeque, sync::Arc, time::Duration, vec};

use tokio::time::Instant;

use crate::{Backend, ModelConfig, ModelId, ScheduleError, slot::Slot};

/// The not-yet-dispatched part of one request.
pub(crate) struct Queued<B: Backend> {
    pub(crate) slot: Arc<Slot<B::Output>>,
    /// Inputs not yet taken into a batch, in request order.
    pub(crate) inputs: vec::IntoIter<B::Input>,
    /// Position in the request of the next input in `inputs`.
    pub(crate) next_index: usize,
    pub(crate) enqueued_at: Instant,
    pub(crate) deadline: Option<Instant>,
}

/// FIFO of requests of one model and one priority.
pub(crate) struct Lane<B: Backend> {
    entries: VecDeque<Queued<B>>,
    /// Sum of the remaining inputs of `entries`.
    images: usize,
}

/// Whether a lane should be dispatched now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Readiness {
    Empty,
    Ready,
    /// Not full, and its oldest entry reaches `max_queue_delay` at this time.
    At(Instant),
}

/// Images removed from a lane without running.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Removed {
    /// Images whose deadline had passed. Their requests got `DeadlineExceeded`.
    pub(crate) expired: usize,
    /// Images of requests that already had an outcome or whose caller was gone.
    pub(crate) abandoned: usize,
}

/// Inputs for one backend call, all of one model.
pub(crate) struct Batch<B: Backend> {
    pub(crate) model: ModelId,
    pub(crate) inputs: Vec<B::Input>,
    /// Runs of inputs per request, in input order.
    pub(crate) segments: Vec<Segment<B::Output>>,
}

/// A run of consecutive inputs of one batch that belong to one request.
pub(crate) struct Segment<O> {
    pub(crate) slot: Arc<Slot<O>>,
    /// Position in the request of the first input of this run.
    pub(crate) start: usize,
    pub(crate) len: usize,
    pub(crate) queue_wait: Duration,
}

// === impl Lane ===

impl<B: Backend> Lane<B> {
    pub(crate) fn new() -> Self {
        Self {
            entries: VecDeque::new(),
            images: 0,
        }
    }

    pub(crate) fn images(&self) -> usize {
        self.images
    }

    pub(crate) fn push(&mut self, entry: Queued<B>) {
        self.images += entry.inputs.len();
        self.entries.push_back(entry);
    }

    /// Removes the queued remainder of the request behind `slot`, returning its image count.
    pub(crate) fn remove_request(&mut self, slot: &Arc<Slot<B::Output>>) -> usize {
        let Some(position) = self
            .entries
            .iter()
            .position(|entry| Arc::ptr_eq(&entry.slot, slot))
        else {
            return 0;
        };
        let images = self.entries[position].inputs.len();
        self.entries.remove(position);
        self.images -= images;
        images
    }

    /// Removes every entry, returning the requests' slots.
    pub(crate) fn clear(&mut self) -> impl Iterator<Item = Arc<Slot<B::Output>>> {
        self.images = 0;
        std::mem::take(&mut self.entries)
            .into_iter()
            .map(|entry| entry.slot)
    }

    /// Pops finished and expired entries off the front, failing expired
    /// requests with `DeadlineExceeded`.
    pub(crate) fn pop_dead_front(&mut self, model: &Arc<str>, now: Instant) -> Removed {
        let mut removed = Removed::default();
        while let Some(front) = self.entries.front() {
            let expired = front.deadline.is_some_and(|deadline| deadline <= now);
            if !expired && !front.slot.is_finished() {
                break;
            }

            let images = front.inputs.len();
            if expired && !front.slot.is_finished() {
                front.slot.fail(ScheduleError::DeadlineExceeded {
                    model: Arc::clone(model),
                });
                removed.expired += images;
            } else {
                removed.abandoned += images;
            }
            self.images -= images;
            self.entries.pop_front();
        }
        removed
    }

    /// Returns whether a batch should be formed now. `flush` disregards
    /// `max_queue_delay`, as during shutdown. Call after `pop_dead_front` so
    /// that the front entry is live.
    pub(crate) fn readiness(&self, config: &ModelConfig, now: Instant, flush: bool) -> Readiness {
        let Some(front) = self.entries.front() else {
            return Readiness::Empty;
        };
        if flush || config.max_queue_delay.is_zero() || self.images >= config.max_batch_size {
            return Readiness::Ready;
        }

        let due = front.enqueued_at + config.max_queue_delay;
        if due <= now {
            Readiness::Ready
        } else {
            Readiness::At(due)
        }
    }

    /// Takes up to `max_batch_size` inputs from the front, splitting a request
    /// that does not fit. Dead entries met on the way are removed and
    /// reported in the returned `Removed`. The batch is `None` when no live
    /// entry remained.
    pub(crate) fn take_batch(
        &mut self,
        model: ModelId,
        name: &Arc<str>,
        max_batch_size: usize,
        now: Instant,
    ) -> (Option<Batch<B>>, Removed) {
        let mut removed = Removed::default();
        let mut inputs = Vec::with_capacity(max_batch_size.min(self.images));
        let mut segments = Vec::new();

        while inputs.len() < max_batch_size {
            let dead = self.pop_dead_front(name, now);
            removed.expired += dead.expired;
            removed.abandoned += dead.abandoned;
            let Some(front) = self.entries.front_mut() else {
                break;
            };

            let start = front.next_index;
            let len = front.inputs.len().min(max_batch_size - inputs.len());
            inputs.extend(front.inputs.by_ref().take(len));
            front.next_index += len;
            self.images -= len;
            segments.push(Segment {
                slot: Arc::clone(&front.slot),
                start,
                len,
                queue_wait: now.saturating_duration_since(front.enqueued_at),
            });

            if front.inputs.len() == 0 {
                self.entries.pop_front();
            }
        }

        let batch = (!inputs.is_empty()).then_some(Batch {
            model,
            inputs,
            segments,
        });
        (batch, removed)
    }
}
