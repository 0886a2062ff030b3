//! Validation metrics: accuracy, F1, log loss and ROC AUC for classification; RMSE, MAE and
//! R² for regression (in the target's own units).

/// `(name, value)` pairs in a fixed order.
pub type Metrics = Vec<(String, f64)>;

/// Metrics of class logits `[n, k]` (row-major) against labels.
pub fn classification(logits: &[f32], k: usize, labels: &[i64]) -> Metrics {
    let n = labels.len();
    if n == 0 || k == 0 {
        return vec![];
    }
    let mut correct = 0usize;
    let mut log_loss = 0.0f64;
    let mut predicted = Vec::with_capacity(n);
    let mut positive = Vec::with_capacity(n);
    for (i, &label) in labels.iter().enumerate() {
        let row = &logits[i * k..(i + 1) * k];
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let sum: f64 = row.iter().map(|v| (*v as f64 - max).exp()).sum();
        let log_z = max + sum.ln();
        let label = label as usize;
        log_loss -= row[label] as f64 - log_z;
        let arg = row
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(j, _)| j);
        predicted.push(arg);
        if arg == label {
            correct += 1;
        }
        if k == 2 {
            positive.push(((row[1] as f64) - log_z).exp());
        }
    }
    let mut out = vec![
        ("accuracy".to_string(), correct as f64 / n as f64),
        ("f1".to_string(), f1(&predicted, labels, k)),
        ("log_loss".to_string(), log_loss / n as f64),
    ];
    if k == 2 {
        out.push(("roc_auc".to_string(), roc_auc(&positive, labels)));
    }
    out
}

/// F1 of class 1 for two classes; the unweighted mean over classes (macro F1) otherwise.
fn f1(predicted: &[usize], labels: &[i64], k: usize) -> f64 {
    let per_class = |c: usize| {
        let (mut tp, mut fp, mut fneg) = (0.0, 0.0, 0.0);
        for (p, l) in predicted.iter().zip(labels) {
            let l = *l as usize;
            match (*p == c, l == c) {
                (true, true) => tp += 1.0,
                (true, false) => fp += 1.0,
                (false, true) => fneg += 1.0,
                _ => {}
            }
        }
        if tp == 0.0 {
            0.0
        } else {
            2.0 * tp / (2.0 * tp + fp + fneg)
        }
    };
    if k == 2 {
        per_class(1)
    } else {
        (0..k).map(per_class).sum::<f64>() / k as f64
    }
}

/// Area under the ROC curve of scores for class 1 (ties count half).
fn roc_auc(scores: &[f64], labels: &[i64]) -> f64 {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|a, b| scores[*a].total_cmp(&scores[*b]));
    // Average ranks over ties (Mann–Whitney U).
    let mut ranks = vec![0.0; scores.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for o in &order[i..=j] {
            ranks[*o] = rank;
        }
        i = j + 1;
    }
    let pos = labels.iter().filter(|l| **l == 1).count() as f64;
    let neg = labels.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return f64::NAN;
    }
    let rank_sum: f64 = labels
        .iter()
        .zip(&ranks)
        .filter(|(l, _)| **l == 1)
        .map(|(_, r)| r)
        .sum();
    (rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg)
}

/// Metrics of predictions against targets, both in the target's units.
pub fn regression(predicted: &[f64], actual: &[f64]) -> Metrics {
    let n = actual.len() as f64;
    if actual.is_empty() {
        return vec![];
    }
    let mean = actual.iter().sum::<f64>() / n;
    let (mut se, mut ae, mut tot) = (0.0, 0.0, 0.0);
    for (p, a) in predicted.iter().zip(actual) {
        se += (p - a) * (p - a);
        ae += (p - a).abs();
        tot += (a - mean) * (a - mean);
    }
    vec![
        ("rmse".to_string(), (se / n).sqrt()),
        ("mae".to_string(), ae / n),
        (
            "r2".to_string(),
            if tot > 0.0 { 1.0 - se / tot } else { f64::NAN },
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(m: &Metrics, k: &str) -> f64 {
        m.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| *v)
            .expect("metric present")
    }

    #[test]
    fn binary_metrics_match_hand_computed_values() {
        // Scores for class 1: 0.9, 0.2, 0.6, 0.4; labels 1, 0, 0, 1.
        let logit = |p: f64| ((p / (1.0 - p)).ln()) as f32;
        let logits: Vec<f32> = [0.9, 0.2, 0.6, 0.4]
            .iter()
            .flat_map(|p| [0.0, logit(*p)])
            .collect();
        let m = classification(&logits, 2, &[1, 0, 0, 1]);
        assert!((get(&m, "accuracy") - 0.5).abs() < 1e-9);
        // Predicted 1,0,1,0 → tp 1, fp 1, fn 1 → F1 0.5.
        assert!((get(&m, "f1") - 0.5).abs() < 1e-9);
        // Positive scores 0.9, 0.4 vs negative 0.2, 0.6: pairs won 3 of 4.
        assert!((get(&m, "roc_auc") - 0.75).abs() < 1e-9);
        let ll = -(0.9f64.ln() + 0.8f64.ln() + 0.4f64.ln() + 0.4f64.ln()) / 4.0;
        assert!((get(&m, "log_loss") - ll).abs() < 1e-5);
    }

    #[test]
    fn regression_metrics() {
        let m = regression(&[1.0, 2.0, 3.0], &[1.0, 2.0, 5.0]);
        assert!((get(&m, "mae") - 2.0 / 3.0).abs() < 1e-12);
        assert!((get(&m, "rmse") - (4.0f64 / 3.0).sqrt()).abs() < 1e-12);
        // SS_tot = (1-8/3)^2 + (2-8/3)^2 + (5-8/3)^2 = 8.6667; R² = 1 - 4/8.6667.
        assert!((get(&m, "r2") - (1.0 - 4.0 / (26.0 / 3.0))).abs() < 1e-12);
    }
}
