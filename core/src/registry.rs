/// What a backend crate registers with `inventory::submit!` so that the
/// worker can list it and refuse an unusable choice before loading a model.
#[derive(Debug)]
pub struct BackendDescriptor {
    /// Name used in config (`[backend] kind = "..."`) and on the command line.
    pub name: &'static str,
    /// One line for `rbees backends`.
    pub description: &'static str,
    /// Device patterns it accepts, e.g. `["cpu"]` or `["cpu", "cuda:N"]`.
    pub devices: &'static [&'static str],
    /// `Ok` if the backend can run on `device` on this machine, otherwise why not.
    pub probe: fn(device: &str) -> Result<(), String>,
}

inventory::collect!(BackendDescriptor);

/// Every backend linked into this binary, sorted by name.
pub fn descriptors() -> Vec<&'static BackendDescriptor> {
    let mut all: Vec<_> = inventory::iter::<BackendDescriptor>.into_iter().collect();
    all.sort_by_key(|d| d.name);
    all
}

/// The descriptor called `name`, or an error listing the known names.
pub fn find_descriptor(name: &str) -> Result<&'static BackendDescriptor, String> {
    let all = descriptors();
    all.iter().copied().find(|d| d.name == name).ok_or_else(|| {
        let known: Vec<_> = all.iter().map(|d| d.name).collect();
        format!(
            "unknown backend '{name}'; known backends: {}",
            known.join(", ")
        )
    })
}
