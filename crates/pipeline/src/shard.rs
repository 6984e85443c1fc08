//! Which part of the work one process takes, so that many processes (pods of a Kubernetes
//! Indexed Job, tasks of a Slurm job array, hosts started by hand) split one migration.
//!
//! A shard's membership is a fixed hash of what is being regenerated, never of its place in
//! Uploads: a photo belongs to shard `fnv1a64(path) % N`, where `path` is the exact bytes of
//! its Uploads-relative, `/`-separated path; with `--regenerate facens` alone a face belongs to
//! shard `fnv1a64(id) % N` of its id's 8 little-endian bytes. FNV-1a (64 bit, offset basis
//! 0xcbf29ce484222325, prime 0x100000001b3) is specified once and for all, so the split is the
//! same on every machine and every refacen version, and photos added or removed in the
//! middle of a run move no other photo to another shard.

use std::fmt;

use refacen_store::FaceId;

/// FNV-1a, 64 bit: the shard hash. Changing it would move photos between the shards of runs
/// already under way, so it never changes.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Shard `index` of `count` (`--shard K/N`: K is 0-based, as `JOB_COMPLETION_INDEX` is).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl Shard {
    pub fn new(index: u64, count: u64) -> Result<Shard, ShardError> {
        if count == 0 {
            return Err(ShardError::NoShards);
        }
        if index >= count {
            return Err(ShardError::IndexOutOfRange { index, count });
        }
        Ok(Shard { index, count })
    }

    /// Whether the photo at `path` (Uploads-relative bytes) is this shard's.
    pub fn takes_photo(&self, path: &[u8]) -> bool {
        fnv1a64(path) % self.count == self.index
    }

    /// Whether the face `id` is this shard's (`--regenerate facens` alone).
    pub fn takes_face(&self, id: FaceId) -> bool {
        fnv1a64(&id.to_le_bytes()) % self.count == self.index
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl std::str::FromStr for Shard {
    type Err = ShardError;

    fn from_str(s: &str) -> Result<Shard, ShardError> {
        let bad = || ShardError::Syntax(s.to_string());
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let index = k.trim().parse().map_err(|_| bad())?;
        let count = n.trim().parse().map_err(|_| bad())?;
        Shard::new(index, count)
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    #[error("`{0}` is not a shard: write K/N, e.g. --shard 0/4 for the first of 4 shards (K from 0 to N-1)")]
    Syntax(String),
    #[error("a shard count of 0: there must be at least one shard")]
    NoShards,
    #[error("shard index {index} is out of range: with {count} shards the index runs from 0 to {}", count - 1)]
    IndexOutOfRange { index: u64, count: u64 },
    #[error("{set} is set but {missing} is not: {hint}")]
    HalfSet { set: &'static str, missing: &'static str, hint: &'static str },
    #[error("{name}={value:?} is not a whole number")]
    NotANumber { name: &'static str, value: String },
    #[error("{name}={value} is {problem}")]
    Inconsistent { name: &'static str, value: u64, problem: String },
    #[error(
        "both a Kubernetes Indexed Job (JOB_COMPLETION_INDEX) and a Slurm job array (SLURM_ARRAY_TASK_ID) \
         are in the environment: give --shard K/N to say which split this process takes"
    )]
    TwoEngines,
}

/// Where a run's shard came from, for its first line and its progress record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShardSource {
    Flag,
    Kubernetes,
    Slurm,
}

impl fmt::Display for ShardSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ShardSource::Flag => "--shard",
            ShardSource::Kubernetes => "Kubernetes Indexed Job (JOB_COMPLETION_INDEX, REFACEN_SHARDS)",
            ShardSource::Slurm => "Slurm job array (SLURM_ARRAY_TASK_ID)",
        })
    }
}

/// The shard a scheduler gave this process through its environment, read with `var`:
/// - Kubernetes Indexed Jobs: `JOB_COMPLETION_INDEX` (0-based), with the shard count in
///   `REFACEN_SHARDS` (the Job's `completions`, which the pod does not see unless the
///   manifest passes it);
/// - Slurm job arrays: `SLURM_ARRAY_TASK_ID`, with `SLURM_ARRAY_TASK_COUNT` and
///   `SLURM_ARRAY_TASK_MIN` (`--array=1-8` gives shards 0..7 of 8), or, without the count,
///   `SLURM_ARRAY_TASK_MIN`..`SLURM_ARRAY_TASK_MAX`. Arrays with a step (`--array=0-15:2`)
///   or gaps have a count that does not match the range, and are refused.
///
/// None when neither engine is there; an error when one is half there.
pub fn from_engine(var: impl Fn(&str) -> Option<String>) -> Result<Option<(Shard, ShardSource)>, ShardError> {
    let number = |name: &'static str| -> Result<Option<u64>, ShardError> {
        match var(name) {
            None => Ok(None),
            Some(v) => v.trim().parse().map(Some).map_err(|_| ShardError::NotANumber { name, value: v }),
        }
    };
    let k8s = number("JOB_COMPLETION_INDEX")?;
    let slurm = number("SLURM_ARRAY_TASK_ID")?;
    match (k8s, slurm) {
        (Some(_), Some(_)) => Err(ShardError::TwoEngines),
        (Some(index), None) => {
            let count = number("REFACEN_SHARDS")?.ok_or(ShardError::HalfSet {
                set: "JOB_COMPLETION_INDEX",
                missing: "REFACEN_SHARDS",
                hint: "set REFACEN_SHARDS to the Job's completions (deploy/kubernetes does), or give --shard K/N",
            })?;
            Ok(Some((Shard::new(index, count)?, ShardSource::Kubernetes)))
        }
        (None, Some(task)) => {
            let (min, max, count) = (
                number("SLURM_ARRAY_TASK_MIN")?,
                number("SLURM_ARRAY_TASK_MAX")?,
                number("SLURM_ARRAY_TASK_COUNT")?,
            );
            let half = |missing| ShardError::HalfSet {
                set: "SLURM_ARRAY_TASK_ID",
                missing,
                hint: "submit with sbatch --array (Slurm sets them), or give --shard K/N",
            };
            let min = min.ok_or_else(|| half("SLURM_ARRAY_TASK_MIN"))?;
            let count = match (count, max) {
                (Some(count), _) => count,
                (None, Some(max)) if max >= min => max - min + 1,
                (None, Some(max)) => {
                    return Err(ShardError::Inconsistent {
                        name: "SLURM_ARRAY_TASK_MAX",
                        value: max,
                        problem: format!("below SLURM_ARRAY_TASK_MIN={min}"),
                    });
                }
                (None, None) => return Err(half("SLURM_ARRAY_TASK_COUNT")),
            };
            if let Some(max) = max
                && max.checked_sub(min).and_then(|d| d.checked_add(1)) != Some(count)
            {
                return Err(ShardError::Inconsistent {
                    name: "SLURM_ARRAY_TASK_COUNT",
                    value: count,
                    problem: format!(
                        "not the size of the range {min}-{max}: an array with a step or gaps cannot be \
                         split evenly; use --array={min}-{} or give --shard K/N",
                        min + count - 1
                    ),
                });
            }
            let index = task.checked_sub(min).ok_or(ShardError::Inconsistent {
                name: "SLURM_ARRAY_TASK_ID",
                value: task,
                problem: format!("below SLURM_ARRAY_TASK_MIN={min}"),
            })?;
            Ok(Some((Shard::new(index, count)?, ShardSource::Slurm)))
        }
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string())
    }

    #[test]
    fn the_hash_is_fnv1a_64_as_published() {
        // The published FNV-1a test vectors (Fowler, Noll, Vo: "FNV test suite").
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn every_photo_is_in_exactly_one_shard_whatever_else_is_there() {
        let paths: Vec<Vec<u8>> =
            (0..2000).map(|i| format!("d{}/IMG_{i:05}.jpg", i % 7).into_bytes()).collect();
        let shards: Vec<Shard> = (0..4).map(|k| Shard::new(k, 4).unwrap()).collect();
        let mut sizes = [0usize; 4];
        for path in &paths {
            let owners: Vec<usize> = (0..4).filter(|&k| shards[k].takes_photo(path)).collect();
            assert_eq!(owners.len(), 1, "{}", String::from_utf8_lossy(path));
            sizes[owners[0]] += 1;
        }
        // Balanced within a few percent of 500 each.
        assert!(sizes.iter().all(|&n| (440..=560).contains(&n)), "{sizes:?}");
        assert!(Shard::new(0, 1).unwrap().takes_photo(b"anything"));
        assert_eq!((1..=100).filter(|&id| Shard::new(3, 4).unwrap().takes_face(id)).count(), {
            (1..=100u64).filter(|id| fnv1a64(&id.to_le_bytes()) % 4 == 3).count()
        });
    }

    #[test]
    fn shard_syntax_and_range_are_checked() {
        assert_eq!("2/4".parse::<Shard>(), Ok(Shard { index: 2, count: 4 }));
        assert_eq!("4/4".parse::<Shard>(), Err(ShardError::IndexOutOfRange { index: 4, count: 4 }));
        assert_eq!("0/0".parse::<Shard>(), Err(ShardError::NoShards));
        assert!(matches!("2".parse::<Shard>(), Err(ShardError::Syntax(_))));
        assert!(matches!("-1/4".parse::<Shard>(), Err(ShardError::Syntax(_))));
        assert!(ShardError::IndexOutOfRange { index: 4, count: 4 }.to_string().contains("from 0 to 3"));
    }

    #[test]
    fn engines_are_read_from_their_environment() {
        assert_eq!(from_engine(env(&[])), Ok(None));
        assert_eq!(
            from_engine(env(&[("JOB_COMPLETION_INDEX", "3"), ("REFACEN_SHARDS", "8")])),
            Ok(Some((Shard { index: 3, count: 8 }, ShardSource::Kubernetes)))
        );
        assert!(matches!(
            from_engine(env(&[("JOB_COMPLETION_INDEX", "3")])),
            Err(ShardError::HalfSet { missing: "REFACEN_SHARDS", .. })
        ));
        assert_eq!(
            from_engine(env(&[("JOB_COMPLETION_INDEX", "8"), ("REFACEN_SHARDS", "8")])),
            Err(ShardError::IndexOutOfRange { index: 8, count: 8 })
        );
        assert!(matches!(
            from_engine(env(&[("JOB_COMPLETION_INDEX", "x"), ("REFACEN_SHARDS", "8")])),
            Err(ShardError::NotANumber { .. })
        ));
        // sbatch --array=1-8: task 1 is shard 0 of 8.
        let slurm = [
            ("SLURM_ARRAY_TASK_ID", "1"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_MAX", "8"),
            ("SLURM_ARRAY_TASK_COUNT", "8"),
        ];
        assert_eq!(from_engine(env(&slurm)), Ok(Some((Shard { index: 0, count: 8 }, ShardSource::Slurm))));
        assert_eq!(
            from_engine(env(&slurm[..3])),
            Ok(Some((Shard { index: 0, count: 8 }, ShardSource::Slurm)))
        );
        // --array=0-15:2 has 8 tasks over a range of 16.
        let stepped = [
            ("SLURM_ARRAY_TASK_ID", "2"),
            ("SLURM_ARRAY_TASK_MIN", "0"),
            ("SLURM_ARRAY_TASK_MAX", "14"),
            ("SLURM_ARRAY_TASK_COUNT", "8"),
        ];
        assert!(matches!(from_engine(env(&stepped)), Err(ShardError::Inconsistent { .. })));
        assert!(matches!(
            from_engine(env(&[("SLURM_ARRAY_TASK_ID", "1")])),
            Err(ShardError::HalfSet { missing: "SLURM_ARRAY_TASK_MIN", .. })
        ));
        assert_eq!(
            from_engine(env(&[("SLURM_ARRAY_TASK_ID", "1"), ("JOB_COMPLETION_INDEX", "1")])),
            Err(ShardError::TwoEngines)
        );
    }
}
