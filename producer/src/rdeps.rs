//! Reverse dependencies as a run's listing (`--rdeps-of PKG --deps FILE`):
//! the packages that depend on the changed ones, directly or up to a depth,
//! most depended-upon first, read from a dependency index:
//!
//! - a Debian `Packages` file (or several concatenated): `Depends` and
//!   `Pre-Depends`, every alternative of an `a | b` counting, versions and
//!   architecture qualifiers ignored, virtual packages through `Provides`;
//! - or a folder of Python metadata (`METADATA` or `PKG-INFO` files, at any
//!   depth): `Name` and `Requires-Dist`, names normalized as PEP 503 says,
//!   requirements only an extra asks for left out (optional).
//!
//! Pure parsing and a breadth-first walk; the producer reads the file.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::Path;

/// Which packages depend on which.
#[derive(Debug, Default)]
pub struct Index {
    /// Each package, with the packages it depends on (virtual names resolved
    /// to their providers).
    depends: BTreeMap<String, BTreeSet<String>>,
    /// Python names compare normalized (PEP 503); Debian names as they are.
    normalize: bool,
}

/// What to list.
#[derive(Debug, Clone)]
pub struct Query {
    pub of: Vec<String>,
    /// 1: direct reverse dependencies only.
    pub depth: usize,
    pub limit: Option<usize>,
}

impl Index {
    /// The index in `path`: a Packages file, or a folder of Python metadata.
    pub fn read(path: &Path) -> Result<Index, String> {
        if path.is_dir() {
            return python_index(path);
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the dependency index {}: {e}", path.display()))?;
        Ok(debian_index(&text))
    }

    /// The packages that depend on `query.of`, directly or through others up
    /// to `query.depth` steps, each once, most depended-upon first (by how
    /// many packages of the index depend on it directly), then by name; at
    /// most `query.limit`.
    pub fn reverse_dependencies(&self, query: &Query) -> Vec<String> {
        let mut reverse: HashMap<&str, Vec<&str>> = HashMap::new();
        for (package, depends) in &self.depends {
            for dependency in depends {
                reverse
                    .entry(dependency.as_str())
                    .or_default()
                    .push(package.as_str());
            }
        }
        let changed: BTreeSet<String> = query
            .of
            .iter()
            .map(|p| match self.normalize {
                true => normalized(p),
                false => p.trim().to_owned(),
            })
            .collect();
        let mut found: BTreeSet<&str> = BTreeSet::new();
        let mut frontier: VecDeque<(&str, usize)> =
            changed.iter().map(|p| (p.as_str(), 0)).collect();
        while let Some((package, depth)) = frontier.pop_front() {
            if depth >= query.depth.max(1) {
                continue;
            }
            for &dependent in reverse.get(package).into_iter().flatten() {
                if !changed.contains(dependent) && found.insert(dependent) {
                    frontier.push_back((dependent, depth + 1));
                }
            }
        }
        let weight = |p: &str| reverse.get(p).map_or(0, Vec::len);
        let mut listed: Vec<&str> = found.into_iter().collect();
        listed.sort_by(|a, b| weight(b).cmp(&weight(a)).then(a.cmp(b)));
        listed.truncate(query.limit.unwrap_or(usize::MAX));
        listed.into_iter().map(str::to_owned).collect()
    }
}

/// A Debian `Packages` file's dependencies (module docs).
fn debian_index(text: &str) -> Index {
    let mut depends: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut providers: HashMap<String, BTreeSet<String>> = HashMap::new();
    for paragraph in paragraphs(text) {
        let Some(name) = paragraph.get("package") else {
            continue;
        };
        let entry = depends.entry(name.clone()).or_default();
        for field in ["depends", "pre-depends"] {
            for dependency in paragraph
                .get(field)
                .map(|v| relation_names(v))
                .unwrap_or_default()
            {
                entry.insert(dependency);
            }
        }
        for provided in paragraph
            .get("provides")
            .map(|v| relation_names(v))
            .unwrap_or_default()
        {
            providers.entry(provided).or_default().insert(name.clone());
        }
    }
    // A dependency on a virtual package is one on each of its providers.
    for names in depends.values_mut() {
        let virtual_ones: Vec<String> = names
            .iter()
            .filter(|n| providers.contains_key(*n))
            .cloned()
            .collect();
        for name in virtual_ones {
            names.extend(providers[&name].iter().cloned());
        }
    }
    Index {
        depends,
        normalize: false,
    }
}

/// The fields of each paragraph, names lower case, continuation lines
/// joined.
fn paragraphs(text: &str) -> Vec<HashMap<String, String>> {
    let mut all = Vec::new();
    let mut current: HashMap<String, String> = HashMap::new();
    let mut last: Option<String> = None;
    for line in text.lines() {
        if line.trim().is_empty() {
            if !current.is_empty() {
                all.push(std::mem::take(&mut current));
            }
            last = None;
        } else if line.starts_with([' ', '\t']) {
            if let Some(value) = last.as_ref().and_then(|k| current.get_mut(k)) {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((key, value)) = line.split_once(':') {
            let key = key.trim().to_ascii_lowercase();
            current.insert(key.clone(), value.trim().to_owned());
            last = Some(key);
        }
    }
    if !current.is_empty() {
        all.push(current);
    }
    all
}

/// The package names a relation field names: `a (>= 1) | b:any, c [amd64]`
/// is a, b and c.
fn relation_names(value: &str) -> Vec<String> {
    value
        .split([',', '|'])
        .filter_map(|alternative| {
            let name = alternative.trim().split([' ', '(', '[', '<']).next()?;
            let name = name.split(':').next()?;
            (!name.is_empty()).then(|| name.to_owned())
        })
        .collect()
}

/// A folder of Python metadata files (module docs).
fn python_index(dir: &Path) -> Result<Index, String> {
    let mut files = Vec::new();
    collect_metadata(dir, &mut files)
        .map_err(|e| format!("cannot read the dependency index {}: {e}", dir.display()))?;
    let mut depends: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        let (name, requires) = python_metadata(&text);
        if let Some(name) = name {
            depends.entry(name).or_default().extend(requires);
        }
    }
    Ok(Index {
        depends,
        normalize: true,
    })
}

fn collect_metadata(dir: &Path, files: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_metadata(&path, files)?;
        } else if path
            .file_name()
            .is_some_and(|n| n == "METADATA" || n == "PKG-INFO")
        {
            files.push(path);
        }
    }
    Ok(())
}

/// A metadata file's name and what it requires (outside extras), normalized.
fn python_metadata(text: &str) -> (Option<String>, BTreeSet<String>) {
    let mut name = None;
    let mut requires = BTreeSet::new();
    // The headers end at the first blank line; the description follows.
    for line in text.lines().take_while(|l| !l.trim().is_empty()) {
        if let Some(value) = line.strip_prefix("Name:") {
            name = Some(normalized(value.trim()));
        } else if let Some(value) = line.strip_prefix("Requires-Dist:") {
            let (requirement, marker) = value.split_once(';').unwrap_or((value, ""));
            if marker.contains("extra") {
                continue;
            }
            let dependency = requirement
                .trim()
                .split(|c: char| !(c.is_ascii_alphanumeric() || "-_.".contains(c)))
                .next()
                .unwrap_or_default();
            if !dependency.is_empty() {
                requires.insert(normalized(dependency));
            }
        }
    }
    (name, requires)
}

/// A Python project's name as PEP 503 compares it (runs of `-_.` are one
/// `-`, lower case).
fn normalized(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut separator = false;
    for c in name.trim().chars() {
        if "-_.".contains(c) {
            separator = true;
            continue;
        }
        if separator && !out.is_empty() {
            out.push('-');
        }
        separator = false;
        out.push(c.to_ascii_lowercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PACKAGES: &str = "\
Package: libfoo1
Version: 1.0

Package: foo-tools
Depends: libfoo1 (>= 1.0), libc6
Provides: foo-cli

Package: app-a
Pre-Depends: libfoo1:any
Depends: bar | foo-cli

Package: app-b
Depends: app-a,
 libbar
Description: depends on app-a
 over two lines

Package: app-c
Depends: foo-tools [amd64], app-a
";

    fn query(of: &[&str], depth: usize) -> Query {
        Query {
            of: of.iter().map(|s| s.to_string()).collect(),
            depth,
            limit: None,
        }
    }

    #[test]
    fn debian_reverse_dependencies_through_alternatives_and_virtual_packages() {
        let index = debian_index(PACKAGES);
        assert_eq!(
            index.reverse_dependencies(&query(&["libfoo1"], 1)),
            ["app-a", "foo-tools"],
            "direct: Depends and Pre-Depends"
        );
        // foo-tools provides foo-cli, which app-a may use instead of bar.
        assert_eq!(
            index.reverse_dependencies(&query(&["foo-tools"], 1)),
            ["app-a", "app-c"]
        );
        assert_eq!(
            index.reverse_dependencies(&query(&["libfoo1"], 2)),
            ["app-a", "foo-tools", "app-b", "app-c"],
            "most depended-upon first (app-a and foo-tools have two dependents each), then by name"
        );
        let dotted = debian_index("Package: python3.11\n\nPackage: app\nDepends: python3.11\n");
        assert_eq!(
            dotted.reverse_dependencies(&query(&["python3.11"], 1)),
            ["app"],
            "Debian names are not normalized as Python's are"
        );
        let mut limited = query(&["libfoo1"], 3);
        limited.limit = Some(2);
        assert_eq!(index.reverse_dependencies(&limited).len(), 2);
    }

    #[test]
    fn python_requirements_by_normalized_name_without_extras() {
        let (name, requires) = python_metadata(
            "Metadata-Version: 2.1\nName: My_App\nRequires-Dist: Requests (>=2.0)\n\
             Requires-Dist: zope.interface; python_version >= \"3\"\n\
             Requires-Dist: pysocks; extra == \"socks\"\n\nRequires-Dist: not-a-header\n",
        );
        assert_eq!(name.as_deref(), Some("my-app"));
        assert_eq!(
            requires.into_iter().collect::<Vec<_>>(),
            ["requests", "zope-interface"]
        );
    }
}
