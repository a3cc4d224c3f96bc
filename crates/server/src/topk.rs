//! Turning logits into ranked, labelled class probabilities.

use effnet_repository::Labels;
use serde::Serialize;

/// One ranked class of a classification.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassScore {
    pub index: usize,
    pub wnid: String,
    pub label: String,
    /// Softmax probability in `0..=1`.
    pub score: f32,
}

/// Softmax over `logits`, computed stably by subtracting the maximum.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|&x| (x - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// The `k` highest-scoring class indices, best first. Ties keep the lower
/// index first, so results are deterministic.
pub fn top_k_indices(scores: &[f32], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    let k = k.min(scores.len());
    let by_score = |a: &usize, b: &usize| scores[*b].total_cmp(&scores[*a]).then(a.cmp(b));
    if k < order.len() {
        order.select_nth_unstable_by(k, by_score);
        order.truncate(k);
    }
    order.sort_by(by_score);
    order
}

/// The top `k` classes of one image's logits, with labels and probabilities.
pub fn classify(logits: &[f32], k: usize, labels: &Labels) -> Vec<ClassScore> {
    let probabilities = softmax(logits);
    top_k_indices(&probabilities, k)
        .into_iter()
        .map(|index| {
            let (wnid, label) = labels
                .get(index)
                .map(|l| (l.wnid.clone(), l.name.clone()))
                .unwrap_or_default();
            ClassScore {
                index,
                wnid,
                label,
                score: probabilities[index],
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one() {
        let p = softmax(&[1.0, 2.0, 3.0, 1000.0]);

        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(p[3] > 0.999);
    }

    #[test]
    fn top_k_orders_by_score_then_index() {
        let scores = [0.1, 0.5, 0.2, 0.5, 0.0];

        assert_eq!(top_k_indices(&scores, 3), vec![1, 3, 2]);
    }

    #[test]
    fn top_k_larger_than_len_returns_all() {
        assert_eq!(top_k_indices(&[0.3, 0.7], 10), vec![1, 0]);
    }
}
