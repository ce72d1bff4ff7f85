//! The registry's typed values: what a row of the registry may hold, parsed once when it
//! is read and written only from these types, so that no part of Kartu compares status or
//! role strings of its own.
//!
//! - [`Role`]: what a credential may do.
//! - [`Categories`]: a holder's categories, which service points' policies admit.
//! - [`MerchantCategory`]: what a merchant sells (the city's books total by it).
//! - [`CardStatus`] and [`BlockReason`], with the card's lifecycle in [`crate::lifecycle`].

use std::fmt;

use serde::{Deserialize, Serialize};

/// A stored name that is not one of a type's names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a {what} (one of {names})")]
pub struct UnknownName {
    /// What was being read, e.g. "card status".
    pub what: &'static str,
    /// The text, cut to 40 characters.
    pub value: String,
    /// The names it may be, comma-separated.
    pub names: String,
}

impl UnknownName {
    fn new(what: &'static str, value: &str, names: &[&str]) -> UnknownName {
        UnknownName { what, value: value.chars().take(40).collect(), names: names.join(", ") }
    }
}

/// An enum stored and sent by name: `as_str`, `parse`, `ALL`, `Display`, `FromStr` and
/// `TryFrom<String>` (what diesel reads a column into) from one list of names.
macro_rules! named {
    ($(#[$m:meta])* $ty:ident, $what:literal, { $($(#[$vm:meta])* $variant:ident = $name:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $ty {
            $($(#[$vm])* $variant),+
        }

        impl $ty {
            /// Every value, in declaration order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];
            /// Every name, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$($name),+];

            /// The stored (and wire) name.
            #[must_use]
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),+
                }
            }

            /// Reads a stored (or wire) name.
            ///
            /// # Errors
            /// [`UnknownName`] when `text` is not one of [`Self::NAMES`].
            pub fn parse(text: &str) -> Result<$ty, UnknownName> {
                match text {
                    $($name => Ok($ty::$variant),)+
                    _ => Err(UnknownName::new($what, text, Self::NAMES)),
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $ty {
            type Err = UnknownName;
            fn from_str(text: &str) -> Result<$ty, UnknownName> {
                $ty::parse(text)
            }
        }

        impl TryFrom<String> for $ty {
            type Error = UnknownName;
            fn try_from(text: String) -> Result<$ty, UnknownName> {
                $ty::parse(&text)
            }
        }

        impl Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        /// Read from a string, so that a value of the wrong JSON type is a field error
        /// like any other (serde's derived enum reports a number as a syntax error).
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
                let name = String::deserialize(d)?;
                $ty::parse(&name).map_err(|_| serde::de::Error::unknown_variant(&name, Self::NAMES))
            }
        }

        impl utoipa::PartialSchema for $ty {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .enum_values(Some(Self::NAMES.iter().copied()))
                    .into()
            }
        }

        impl utoipa::ToSchema for $ty {}
    };
}

named!(
    /// What a credential may do; each request's handler names the roles it admits.
    Role, "role", {
        /// The city: issues cards, registers merchants, approves adjustments.
        Operator = "operator",
        /// A merchant's POS (one merchant).
        MerchantTerminal = "merchant_terminal",
        /// A clinic desk, library gate, city office (one service point).
        ServicePoint = "service_point",
        /// A top-up agent's counter (one agent).
        TopUpAgent = "top_up_agent",
        /// A balance kiosk.
        Kiosk = "kiosk",
        /// Reads everything, writes nothing.
        Auditor = "auditor",
    }
);

named!(
    /// One holder category, which service points' policies refer to. Declared in
    /// alphabetical order, the order of the stored form and of the API's lists.
    Category, "holder category", {
        /// Holds public health insurance.
        Insured = "insured",
        /// Lives in the city.
        Resident = "resident",
        /// A senior citizen.
        Senior = "senior",
        /// Works for the city.
        Staff = "staff",
        /// A student.
        Student = "student",
    }
);

named!(
    /// What a merchant sells: the city's books total payments by it.
    MerchantCategory, "merchant category", {
        /// Shops and markets.
        Grocery = "grocery",
        /// Hotels and guest houses.
        Hotel = "hotel",
        /// Restaurants and cafés.
        Restaurant = "restaurant",
        /// Hospitals and clinics that charge.
        Hospital = "hospital",
        /// Parking garages and street parking.
        Parking = "parking",
        /// Taxis, ferries and other paid transport.
        Transport = "transport",
        /// Public transport operators (bus lines, ferries, rail) with routes, stops and
        /// validators; their rides are priced by the city's fare table.
        Transit = "transit",
        /// Anything else.
        Other = "other",
    }
);

named!(
    /// Where a card is in its life ([`crate::lifecycle`] says what may follow what).
    CardStatus, "card status", {
        /// Pays and opens doors.
        Active = "active",
        /// Refused everywhere until an operator unblocks it.
        Blocked = "blocked",
        /// Replaced by another card, which holds its balance: refused for good.
        Replaced = "replaced",
    }
);

named!(
    /// Why an operator blocked a card.
    BlockReason, "block reason", {
        /// The holder lost it.
        Lost = "lost",
        /// It was stolen.
        Stolen = "stolen",
        /// It no longer reads.
        Damaged = "damaged",
        /// It was used for fraud.
        Fraud = "fraud",
        /// Another reason, told to the holder at the desk.
        Other = "other",
    }
);

named!(
    /// What a service point serves.
    ServiceKind, "service", {
        /// A public clinic.
        Clinic = "clinic",
        /// A public library.
        Library = "library",
        /// A city office (permits, records).
        CityOffice = "city_office",
        /// Any other public service.
        Other = "other",
    }
);

/// A citizen's NIK (Nomor Induk Kependudukan) as written: exactly 16 ASCII digits. The
/// registry keeps only its keyed hash; this is the one check of its form.
#[must_use]
pub fn is_nik(text: &str) -> bool {
    text.len() == 16 && text.bytes().all(|b| b.is_ascii_digit())
}

/// A holder's categories: a set of [`Category`], stored comma-separated in alphabetical
/// order (`resident,student`), read and written only through this type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Categories(u8);

impl Categories {
    /// No category.
    pub const NONE: Categories = Categories(0);

    /// `Category::ALL` is in declaration order, so a category's discriminant is its bit.
    fn bit(c: Category) -> u8 {
        1 << c as u8
    }

    /// The set of these categories (duplicates count once).
    #[must_use]
    pub fn of(categories: &[Category]) -> Categories {
        Categories(categories.iter().fold(0, |set, c| set | Categories::bit(*c)))
    }

    /// Parses names, as a request or a policy gives them.
    ///
    /// # Errors
    /// [`UnknownName`] for the first name that is not a category.
    pub fn parse_names<S: AsRef<str>>(names: &[S]) -> Result<Categories, UnknownName> {
        let parsed: Result<Vec<Category>, UnknownName> = names.iter().map(|n| Category::parse(n.as_ref())).collect();
        Ok(Categories::of(&parsed?))
    }

    /// Parses the stored form (comma-separated names; empty is no category).
    ///
    /// # Errors
    /// [`UnknownName`] for a name that is not a category.
    pub fn parse_stored(text: &str) -> Result<Categories, UnknownName> {
        let names: Vec<&str> = text.split(',').filter(|n| !n.is_empty()).collect();
        Categories::parse_names(&names)
    }

    /// Whether the set holds `c`.
    #[must_use]
    pub fn contains(self, c: Category) -> bool {
        self.0 & Categories::bit(c) != 0
    }

    /// Whether the sets share a category.
    #[must_use]
    pub fn intersects(self, other: Categories) -> bool {
        self.0 & other.0 != 0
    }

    /// Whether the set is empty.
    #[must_use]
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The categories, in [`Category::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Category> {
        Category::ALL.iter().copied().filter(move |c| self.contains(*c))
    }

    /// The names, in [`Category::ALL`] order (what the API returns).
    #[must_use]
    pub fn names(self) -> Vec<String> {
        self.iter().map(|c| c.as_str().to_owned()).collect()
    }
}

/// The stored form: names comma-separated, in [`Category::ALL`] order.
impl fmt::Display for Categories {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, c) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(c.as_str())?;
        }
        Ok(())
    }
}

impl TryFrom<String> for Categories {
    type Error = UnknownName;
    fn try_from(text: String) -> Result<Categories, UnknownName> {
        Categories::parse_stored(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        fn check<T: fmt::Display + Copy + PartialEq + fmt::Debug>(
            all: &[T],
            parse: fn(&str) -> Result<T, UnknownName>,
        ) {
            for v in all {
                assert_eq!(parse(&v.to_string()), Ok(*v));
            }
        }
        check(Role::ALL, Role::parse);
        check(Category::ALL, Category::parse);
        check(MerchantCategory::ALL, MerchantCategory::parse);
        check(CardStatus::ALL, CardStatus::parse);
        check(BlockReason::ALL, BlockReason::parse);
        // The stored names are a contract with every database that holds them.
        assert_eq!(Role::NAMES, ["operator", "merchant_terminal", "service_point", "top_up_agent", "kiosk", "auditor"]);
        assert_eq!(CardStatus::NAMES, ["active", "blocked", "replaced"]);
        let e = CardStatus::parse("Active").unwrap_err();
        assert_eq!(e.to_string(), "\"Active\" is not a card status (one of active, blocked, replaced)");
        assert!(Role::parse("").is_err());
        assert!(MerchantCategory::parse("casino").is_err());
    }

    #[test]
    fn names_travel_as_json_strings() {
        assert_eq!(serde_json::to_string(&Role::TopUpAgent).unwrap(), "\"top_up_agent\"");
        assert_eq!(serde_json::from_str::<Role>("\"kiosk\"").unwrap(), Role::Kiosk);
        let e = serde_json::from_str::<Role>("\"root\"").unwrap_err().to_string();
        assert!(e.contains("unknown variant `root`"), "{e}");
        assert!(serde_json::from_str::<CardStatus>("3").unwrap_err().to_string().contains("invalid type"));
    }

    #[test]
    fn categories_store_in_one_order() {
        fn check(input: &[&str], stored: &str) {
            let c = Categories::parse_names(input).unwrap();
            assert_eq!(c.to_string(), stored, "{input:?}");
            assert_eq!(Categories::parse_stored(stored), Ok(c));
        }
        check(&[], "");
        check(&["student"], "student");
        check(&["student", "resident"], "resident,student");
        check(&["staff", "staff", "senior"], "senior,staff");
        check(&["staff", "insured", "senior", "student", "resident"], "insured,resident,senior,staff,student");
        assert!(Categories::parse_names(&["resident", "pirate"]).is_err());
        assert!(Categories::parse_stored("resident,,student").unwrap().contains(Category::Student));
        let a = Categories::of(&[Category::Student]);
        assert!(a.intersects(Categories::of(&[Category::Student, Category::Senior])));
        assert!(!a.intersects(Categories::of(&[Category::Senior])));
        assert!(Categories::NONE.is_empty() && !a.is_empty());
        assert_eq!(a.names(), ["student"]);
    }
}
