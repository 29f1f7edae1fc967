//! Protocol Buffers types generated at build time (and memoized) from `proto/`.

/// `common.proto`.
pub mod common {
    include!(concat!(env!("OUT_DIR"), "/common.rs"));
}

/// `shop.proto`.
pub mod shop {
    include!(concat!(env!("OUT_DIR"), "/shop.rs"));
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::{common, shop};

    #[test]
    fn an_order_round_trips() {
        let order = shop::Order {
            id: "o-1".into(),
            state: shop::OrderState::Paid as i32,
            items: vec![shop::LineItem {
                product: Some(shop::Product {
                    sku: "sku-1".into(),
                    title: "Tea".into(),
                    price: Some(common::Money {
                        currency: "EUR".into(),
                        units: 4,
                        nanos: 500_000_000,
                    }),
                    ..Default::default()
                }),
                quantity: 2,
            }],
            payment: Some(shop::order::Payment::CardToken("tok".into())),
            ..Default::default()
        };
        let bytes = order.encode_to_vec();
        assert_eq!(shop::Order::decode(bytes.as_slice()).unwrap(), order);
    }
}
