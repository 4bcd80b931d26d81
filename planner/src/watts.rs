//! Host power models: watts as a function of CPU utilisation.
//!
//! SPECpower-style tables (11 points at 0, 10, …, 100 % load, linear in between) as
//! CloudSim uses them; a linear idle/max model is the special case of a straight table.

use serde::{Deserialize, Serialize};

/// Power draw at 0 %, 10 %, …, 100 % CPU load, in watts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PowerModel {
    pub watts: [f64; 11],
}

impl PowerModel {
    /// A table measured with SPECpower (11 points).
    pub fn table(watts: [f64; 11]) -> Self {
        Self { watts }
    }

    /// A straight line from idle to max.
    pub fn linear(idle_w: f64, max_w: f64) -> Self {
        let mut watts = [0.0; 11];
        for (i, w) in watts.iter_mut().enumerate() {
            *w = idle_w + (max_w - idle_w) * i as f64 / 10.0;
        }
        Self { watts }
    }

    /// HP ProLiant ML110 G4 (Xeon 3040), CloudSim's `PowerModelSpecPowerHpProLiantMl110G4Xeon3040`.
    pub fn hp_ml110_g4() -> Self {
        Self::table([
            86.0, 89.4, 92.6, 96.0, 99.5, 102.0, 106.0, 108.0, 112.0, 114.0, 117.0,
        ])
    }

    /// HP ProLiant ML110 G5 (Xeon 3075), CloudSim's `PowerModelSpecPowerHpProLiantMl110G5Xeon3075`.
    pub fn hp_ml110_g5() -> Self {
        Self::table([
            93.7, 97.0, 101.0, 105.0, 110.0, 116.0, 121.0, 125.0, 129.0, 133.0, 135.0,
        ])
    }

    /// Watts at utilisation `u` (clamped to 0..=1), linear between table points.
    pub fn watts_at(&self, u: f64) -> f64 {
        let u = u.clamp(0.0, 1.0) * 10.0;
        let i = (u.floor() as usize).min(9);
        let frac = u - i as f64;
        self.watts[i] + (self.watts[i + 1] - self.watts[i]) * frac
    }

    pub fn idle_w(&self) -> f64 {
        self.watts[0]
    }

    pub fn max_w(&self) -> f64 {
        self.watts[10]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolates_like_cloudsim() {
        let g5 = PowerModel::hp_ml110_g5();
        assert_eq!(g5.watts_at(0.0), 93.7);
        assert_eq!(g5.watts_at(1.0), 135.0);
        assert!((g5.watts_at(0.55) - 118.5).abs() < 1e-9);
        assert_eq!(g5.watts_at(1.5), 135.0);
        let lin = PowerModel::linear(100.0, 200.0);
        assert!((lin.watts_at(0.25) - 125.0).abs() < 1e-9);
    }
}
