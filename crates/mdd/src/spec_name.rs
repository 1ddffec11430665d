//! What names a spec file on the server. The server keeps the applied spec as a set of named
//! files, and a file applied again under the same name replaces itself. So the name must not
//! depend on where a command runs from: it is the file's path relative to the root of the
//! git work tree holding it (`dc/ams1.yaml`, whatever the checkout's path or the working
//! directory), and, outside any git work tree, its canonical absolute path.

use std::path::{Component, Path};

/// The name `path` is stored under. Fails only if the file cannot be found.
pub fn spec_name(path: &Path) -> std::io::Result<String> {
    let absolute = std::fs::canonicalize(path)?;
    let mut dir = absolute.parent();
    while let Some(candidate) = dir {
        if candidate.join(".git").exists()
            && let Ok(relative) = absolute.strip_prefix(candidate)
        {
            let parts: Vec<String> = relative
                .components()
                .filter_map(|c| match c {
                    Component::Normal(part) => Some(part.to_string_lossy().into_owned()),
                    _ => None,
                })
                .collect();
            return Ok(parts.join("/"));
        }
        dir = candidate.parent();
    }
    Ok(absolute.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_file_has_one_name_however_it_is_reached() {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = dir.path().join("repo");
        std::fs::create_dir_all(repo.join(".git")).expect("git dir");
        std::fs::create_dir_all(repo.join("dc")).expect("dc dir");
        let file = repo.join("dc/ams1.yaml");
        std::fs::write(&file, "checks: []\n").expect("write");
        assert_eq!(spec_name(&file).expect("name"), "dc/ams1.yaml");
        let odd = repo.join("dc/../dc/./ams1.yaml");
        assert_eq!(spec_name(&odd).expect("name"), "dc/ams1.yaml");

        let loose = dir.path().join("loose.yaml");
        std::fs::write(&loose, "checks: []\n").expect("write");
        let canonical = std::fs::canonicalize(&loose).expect("canonical");
        assert_eq!(
            spec_name(&loose).expect("name"),
            canonical.display().to_string()
        );
        assert!(spec_name(&dir.path().join("missing.yaml")).is_err());
    }
}
