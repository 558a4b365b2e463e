//! One colour per service, the same on every page (graph, charts, search, trace waterfall,
//! compare), readable on the light and the dark background alike.

/// Mid-tone hues with enough contrast against white and against #0d1117. The classes `c0`…`c11`
/// of style.css carry the same colours, in the same order, for HTML that may not set them inline.
const SERVICE_COLOURS: [&str; 12] = [
    "#3b82f6", "#f59e0b", "#10b981", "#8b5cf6", "#ec4899", "#14b8a6", "#f97316", "#6366f1", "#84cc16",
    "#06b6d4", "#d946ef", "#a3a322",
];

/// The place of `service` in the palette: a stable hash of its name, so a service keeps its
/// colour across pages, restarts and data sets.
fn index(service: &str) -> usize {
    // FNV-1a: tiny, stable across Rust versions (unlike `DefaultHasher`).
    let hash = service.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    (hash % SERVICE_COLOURS.len() as u64) as usize
}

/// The colour of `service`, for SVG `fill` and `stroke` attributes.
pub fn service_colour(service: &str) -> &'static str {
    SERVICE_COLOURS[index(service)]
}

/// The CSS class (`c0`…`c11`) giving `service` its colour, for HTML text and shapes.
pub fn service_class(service: &str) -> String {
    format!("c{}", index(service))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_keeps_its_colour() {
        assert_eq!(service_colour("orders"), service_colour("orders"));
        assert!(service_colour("").starts_with('#'));
        assert_eq!(service_class("orders"), service_class("orders"));
    }

    #[test]
    fn class_and_colour_name_the_same_place() {
        for name in ["gateway", "auth", "orders", "<img src=x>", ""] {
            let class = service_class(name);
            let place: usize = class[1..].parse().unwrap();
            assert_eq!(SERVICE_COLOURS[place], service_colour(name), "{name}");
        }
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
