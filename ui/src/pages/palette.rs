//! One colour per service, the same on every page (graph, charts, trace waterfall), readable
//! on the light and the dark background alike.

/// Mid-tone hues with enough contrast against white and against #0d1117.
const SERVICE_COLOURS: [&str; 12] = [
    "#3b82f6", "#f59e0b", "#10b981", "#8b5cf6", "#ec4899", "#14b8a6", "#f97316", "#6366f1", "#84cc16",
    "#06b6d4", "#d946ef", "#a3a322",
];

/// The colour of `service`: a stable hash of its name picks from a fixed palette, so a service
/// keeps its colour across pages, restarts and data sets.
pub fn service_colour(service: &str) -> &'static str {
    // FNV-1a: tiny, stable across Rust versions (unlike `DefaultHasher`).
    let hash = service.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    SERVICE_COLOURS[(hash % SERVICE_COLOURS.len() as u64) as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_keeps_its_colour() {
        assert_eq!(service_colour("orders"), service_colour("orders"));
        assert!(service_colour("").starts_with('#'));
    }

    #[test]
    fn services_spread_over_the_palette() {
        let names = [
            "gateway",
            "auth",
            "orders",
            "inventory",
            "payments",
            "users",
            "shipping",
        ];
        let mut colours: Vec<_> = names.iter().map(|name| service_colour(name)).collect();
        colours.sort();
        colours.dedup();
        assert!(colours.len() >= 4, "{colours:?}");
    }
}
