use anyhow::Result;
use rbees_core::descriptors;

/// `rbees backends`: every linked backend, its devices, and whether it can run here.
pub fn run() -> Result<()> {
    println!(
        "{:<10} {:<14} {:<40} description",
        "name", "devices", "usable here"
    );
    for d in descriptors() {
        let usable = match d.devices.first().map(|dev| (d.probe)(dev)) {
            Some(Ok(())) => "yes".to_string(),
            Some(Err(why)) => format!("no: {why}"),
            None => "no: declares no device".to_string(),
        };
        println!(
            "{:<10} {:<14} {:<40} {}",
            d.name,
            d.devices.join(","),
            usable,
            d.description
        );
    }
    Ok(())
}
