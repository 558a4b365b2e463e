//! One colour per service, the same on every page (graph, charts, search, trace waterfall,
//! compare), readable on the light and the dark background alike.
//!
//! The rule: every service the store has seen, sorted by name, takes the colour of its place in
//! that list, counted modulo the [`SERVICE_COLOURS`] (12). So up to 12 services never share a
//! colour; the 13th shares the 1st's, the 14th the 2nd's, and so on. Every page reads the same
//! list, so a service has one colour everywhere; a new service may shift the colours of those
//! sorting after it, which is the price of keeping them apart.

use ducktrace_store::{search, Reader, StoreError};

/// Mid-tone hues with enough contrast against white and against #0d1117, ordered so that the
/// first few (most installations have few services) are far apart: blue, amber, green, pink,
/// violet, lime, then the nearer shades. The classes `c0`…`c11` of style.css carry the same
/// colours, in the same order, for HTML that may not set them inline.
const SERVICE_COLOURS: [&str; 12] = [
    "#3b82f6", "#f59e0b", "#10b981", "#ec4899", "#8b5cf6", "#84cc16", "#06b6d4", "#f97316", "#d946ef",
    "#14b8a6", "#6366f1", "#a3a322",
];

/// The style.css classes of [`SERVICE_COLOURS`], place for place.
const SERVICE_CLASSES: [&str; 12] = [
    "c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8", "c9", "c10", "c11",
];

/// The colours of the services known when a page is made.
#[derive(Debug)]
pub struct Palette {
    /// Every known service, sorted and without repeats.
    services: Vec<String>,
}

impl Palette {
    /// The palette for `services`, in any order.
    pub fn new(mut services: Vec<String>) -> Self {
        services.sort_unstable();
        services.dedup();
        Self { services }
    }

    /// The palette of every service in the store. Blocks: call it off the async runtime.
    pub fn load(reader: &Reader) -> Result<Self, StoreError> {
        reader.with_connection(search::services).map(Self::new)
    }

    /// The place of `service` in the palette. A name the list lacks (its first spans arrived
    /// after the list was read) takes the place it will have once it is listed.
    fn index(&self, service: &str) -> usize {
        let place = self
            .services
            .binary_search_by(|known| known.as_str().cmp(service))
            .unwrap_or_else(|place| place);
        place % SERVICE_COLOURS.len()
    }

    /// The colour of `service`, for SVG `fill` and `stroke` attributes.
    pub fn colour(&self, service: &str) -> &'static str {
        SERVICE_COLOURS[self.index(service)]
    }

    /// The CSS class (`c0`…`c11`) giving `service` its colour, for HTML text and shapes.
    pub fn class(&self, service: &str) -> &'static str {
        SERVICE_CLASSES[self.index(service)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn palette(names: &[&str]) -> Palette {
        Palette::new(names.iter().map(|name| name.to_string()).collect())
    }

    #[test]
    fn up_to_twelve_services_never_share_a_colour() {
        let names: Vec<String> = (0..12).map(|i| format!("service-{i:02}")).collect();
        let palette = Palette::new(names.iter().rev().cloned().collect());
        let mut colours: Vec<_> = names.iter().map(|name| palette.colour(name)).collect();
        colours.sort_unstable();
        colours.dedup();
        assert_eq!(colours.len(), 12);
    }

    #[test]
    fn colours_follow_the_sorted_names_and_then_cycle() {
        let names: Vec<String> = (0..14).map(|i| format!("s{i:02}")).collect();
        let palette = Palette::new(names.clone());
        for (place, name) in names.iter().enumerate() {
            assert_eq!(palette.colour(name), SERVICE_COLOURS[place % 12], "{name}");
        }
        assert_eq!(palette.colour("s12"), palette.colour("s00"));
    }

    #[test]
    fn class_and_colour_name_the_same_place() {
        let palette = palette(&["gateway", "auth", "orders", "<img src=x>", ""]);
        for name in ["gateway", "auth", "orders", "<img src=x>", "", "unknown"] {
            let class = palette.class(name);
            let place: usize = class[1..].parse().unwrap();
            assert_eq!(SERVICE_COLOURS[place], palette.colour(name), "{name}");
        }
    }

    #[test]
    fn the_stylesheet_classes_carry_the_same_colours() {
        let css = include_str!("../../static/style.css");
        for (class, colour) in SERVICE_CLASSES.iter().zip(SERVICE_COLOURS) {
            let rule = format!(".{class} {{ --svc: {colour}; }}");
            assert!(css.contains(&rule), "{rule} missing from style.css");
        }
    }

    #[test]
    fn order_and_repeats_of_the_list_do_not_matter() {
        let one = palette(&["db", "inventory", "frontend"]);
        let other = palette(&["frontend", "db", "db", "inventory"]);
        for name in ["db", "inventory", "frontend"] {
            assert_eq!(one.colour(name), other.colour(name), "{name}");
        }
        assert_ne!(one.colour("db"), one.colour("inventory"));
    }

    #[test]
    fn an_unlisted_service_takes_its_future_place() {
        let before = palette(&["auth", "orders"]);
        let after = palette(&["auth", "gateway", "orders"]);
        assert_eq!(before.colour("gateway"), after.colour("gateway"));
    }
}
