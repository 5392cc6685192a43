use crate::{Backend, BackendOptions, Result};

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
    /// Rank for `kind = "auto"` (higher first, like ggml's backend score):
    /// among the backends that can use the device and run every weight type
    /// of the model, the one with the highest preference is picked.
    pub preference: u32,
}

inventory::collect!(BackendDescriptor);

/// A backend type linked into the binary, constructed from its descriptor's
/// name (plugins are data, not types: the plugin host constructs those).
/// The worker's list of linked backends is a list of these types.
pub trait BuiltInBackend: Backend {
    /// The name of its [`BackendDescriptor`], in config and on the command line.
    const NAME: &'static str;
    /// Starts the backend on `options.device`, a concrete device: `auto`
    /// and bare ordinals are resolved first ([`BackendDescriptor::resolve_device`]).
    fn start(options: &BackendOptions) -> Result<Self>;
}

/// The device word that lets each backend pick: its first GPU where it
/// runs on CUDA and one is usable here, else the CPU.
pub const AUTO_DEVICE: &str = "auto";

/// Every backend linked into this binary, sorted by name.
pub fn descriptors() -> Vec<&'static BackendDescriptor> {
    let mut all: Vec<_> = inventory::iter::<BackendDescriptor>.into_iter().collect();
    all.sort_by_key(|d| d.name);
    all
}

impl BackendDescriptor {
    /// Whether `device` is of a kind the backend declares (`cuda:N` stands
    /// for `cuda:` and a number), whether or not it is present here.
    pub fn declares(&self, device: &str) -> bool {
        self.devices
            .iter()
            .any(|pattern| match pattern.strip_suffix('N') {
                Some(prefix) => device
                    .strip_prefix(prefix)
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())),
                None => *pattern == device,
            })
    }

    /// `auto`: the first GPU where the backend runs on CUDA and one is
    /// usable here, else the CPU if the backend runs there.
    fn auto_device(&self) -> Result<String, String> {
        let gpu = "cuda:0";
        let gpu_here = self.declares(gpu) && (self.probe)(gpu).is_ok();
        if gpu_here {
            Ok(gpu.to_string())
        } else if self.declares("cpu") {
            Ok("cpu".to_string())
        } else {
            Err(format!(
                "device auto: backend '{}' runs on {} only, and {}",
                self.name,
                self.devices.join(", "),
                (self.probe)(gpu)
                    .err()
                    .unwrap_or_else(|| "no GPU is usable here".into())
            ))
        }
    }

    /// The device `device` means on this backend: `auto` (see
    /// [`AUTO_DEVICE`]), or a bare ordinal as pool managers pass `--device N`: `cuda:N` where the backend runs on CUDA devices,
    /// `cpu` for 0 on a CPU-only backend (the only CPU there is), an error
    /// for any other number there. Any other device string is returned as is.
    pub fn resolve_device(&self, device: &str) -> Result<String, String> {
        if device == AUTO_DEVICE {
            return self.auto_device();
        }
        if device.is_empty() || !device.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(device.to_string());
        }
        let n: u32 = device
            .parse()
            .map_err(|_| format!("device ordinal '{device}' is too large"))?;
        let cuda = format!("cuda:{n}");
        if self.declares(&cuda) {
            Ok(cuda)
        } else if n == 0 && self.declares("cpu") {
            Ok("cpu".to_string())
        } else {
            Err(format!(
                "device {n} is a GPU ordinal, but backend '{}' runs on {} only; use device 0 or cpu",
                self.name,
                self.devices.join(", ")
            ))
        }
    }
}

/// Every backend linked into this binary, most preferred first (see
/// [`BackendDescriptor::preference`]).
pub fn by_preference() -> Vec<&'static BackendDescriptor> {
    let mut all = descriptors();
    all.sort_by_key(|d| std::cmp::Reverse(d.preference));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_device_kinds() {
        let d = BackendDescriptor {
            name: "x",
            description: "",
            devices: &["cpu", "cuda:N"],
            probe: |_| Ok(()),
            preference: 0,
        };
        for yes in ["cpu", "cuda:0", "cuda:12"] {
            assert!(d.declares(yes), "{yes}");
        }
        for no in [
            "cuda:", "cuda", "cuda:x", "cuda:0x", "metal", "CPU", "cpu:0",
        ] {
            assert!(!d.declares(no), "{no}");
        }
    }

    #[test]
    fn a_bare_ordinal_is_a_cuda_device_or_the_cpu() {
        let gpu = BackendDescriptor {
            name: "g",
            description: "",
            devices: &["cpu", "cuda:N"],
            probe: |_| Ok(()),
            preference: 0,
        };
        let cpu = BackendDescriptor {
            devices: &["cpu"],
            name: "c",
            ..gpu
        };
        assert_eq!(gpu.resolve_device("0").unwrap(), "cuda:0");
        assert_eq!(gpu.resolve_device("3").unwrap(), "cuda:3");
        assert_eq!(gpu.resolve_device("cpu").unwrap(), "cpu");
        assert_eq!(cpu.resolve_device("0").unwrap(), "cpu");
        assert_eq!(cpu.resolve_device("cuda:1").unwrap(), "cuda:1");
        let e = cpu.resolve_device("1").unwrap_err();
        assert!(e.contains("GPU ordinal") && e.contains("'c'"), "{e}");
        assert!(cpu.resolve_device("99999999999").is_err());
    }

    #[test]
    fn auto_is_the_first_usable_gpu_else_the_cpu() {
        let no_gpu = BackendDescriptor {
            name: "g",
            description: "",
            devices: &["cpu", "cuda:N"],
            probe: |d| {
                if d == "cpu" {
                    Ok(())
                } else {
                    Err("no GPU here".into())
                }
            },
            preference: 0,
        };
        assert_eq!(no_gpu.resolve_device("auto").unwrap(), "cpu");
        let gpu = BackendDescriptor {
            probe: |_| Ok(()),
            ..no_gpu
        };
        assert_eq!(gpu.resolve_device("auto").unwrap(), "cuda:0");
        let gpu_only = BackendDescriptor {
            devices: &["cuda:N"],
            ..no_gpu
        };
        let e = gpu_only.resolve_device("auto").unwrap_err();
        assert!(e.contains("no GPU here"), "{e}");
    }
}
