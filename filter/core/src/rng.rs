//! Span and trace ids from a fast PRNG (`fastrand`'s wyrand). Seeded once per VM from
//! the host's entropy, so no host call is made per request.

/// The id generator: `fastrand`'s wyrand, seeded once per VM.
#[derive(Debug, Clone)]
pub struct Rng(fastrand::Rng);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(fastrand::Rng::with_seed(seed))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.u64(..)
    }

    /// A non-zero 8-byte id.
    pub fn span_id(&mut self) -> [u8; 8] {
        loop {
            let v = self.next_u64();
            if v != 0 {
                return v.to_be_bytes();
            }
        }
    }

    /// A non-zero 16-byte id, all bits random (W3C "random" flag holds).
    pub fn trace_id(&mut self) -> [u8; 16] {
        loop {
            let hi = self.next_u64();
            let lo = self.next_u64();
            if hi != 0 || lo != 0 {
                let mut out = [0u8; 16];
                out[..8].copy_from_slice(&hi.to_be_bytes());
                out[8..].copy_from_slice(&lo.to_be_bytes());
                return out;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_non_zero_and_distinct() {
        let mut rng = Rng::new(0);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            assert!(seen.insert(rng.span_id()));
        }
    }

    #[test]
    fn low_56_bits_are_uniform_enough() {
        // Consistent sampling compares the low 56 bits with a threshold: check
        // the fraction below a half-way threshold stays near 0.5.
        let mut rng = Rng::new(42);
        let n = 100_000;
        let below = (0..n)
            .filter(|_| {
                let id = meshtrace_proto::TraceId(rng.trace_id());
                id.randomness() < (1u64 << 55)
            })
            .count();
        let frac = below as f64 / n as f64;
        assert!((frac - 0.5).abs() < 0.01, "fraction {frac}");
    }
}
