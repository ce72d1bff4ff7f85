//! Every word the pages show, in Indonesian and English. The verification panels' messages
//! are handed to `kartu.js` as `data-msg-*` attributes, so the script holds no text.

/// The pages' texts in one language.
#[derive(Debug)]
pub struct Text {
    /// The language's own name (for the switch).
    pub language_name: &'static str,
    /// The site's name.
    pub site: &'static str,
    /// The navigation's label.
    pub nav_label: &'static str,
    /// Link to the books.
    pub nav_books: &'static str,
    /// Link to the auditors' page.
    pub nav_audit: &'static str,
    /// Under every page.
    pub footer: &'static str,
    /// My card: title.
    pub card_title: &'static str,
    /// My card: how to open it.
    pub card_hold: (&'static str, &'static str),
    /// My card: the link was used.
    pub card_used: (&'static str, &'static str),
    /// My card: not a genuine card of this city.
    pub card_invalid: (&'static str, &'static str),
    /// My card: not registered.
    pub card_unknown: (&'static str, &'static str),
    /// My card: blocked.
    pub card_blocked: (&'static str, &'static str),
    /// My card: replaced.
    pub card_replaced: (&'static str, &'static str),
    /// My card: read with keys the card no longer holds.
    pub card_outdated: (&'static str, &'static str),
    /// The server is busy or its database is away.
    pub unavailable: (&'static str, &'static str),
    /// The balance's label.
    pub balance: &'static str,
    /// The card's holder.
    pub holder: &'static str,
    /// The card's status.
    pub status: &'static str,
    /// An active card.
    pub status_active: &'static str,
    /// Last movements.
    pub movements: &'static str,
    /// None yet.
    pub no_movements: &'static str,
    /// Table columns: time, where, amount, balance after, receipt.
    pub columns: [&'static str; 5],
    /// The receipt link.
    pub receipt_link: &'static str,
    /// Entry kinds by name.
    pub kinds: &'static [(&'static str, &'static str)],
    /// Merchant categories and public services by name.
    pub categories: &'static [(&'static str, &'static str)],
    /// Access refusal reasons by code.
    pub reasons: &'static [(&'static str, &'static str)],
    /// Receipt: title.
    pub receipt_title: &'static str,
    /// Receipt: not found (or the hash does not match).
    pub receipt_missing: (&'static str, &'static str),
    /// Receipt fields: what, amount, where, when, fee, entry, leaf index, leaf hash.
    pub receipt_fields: [&'static str; 8],
    /// Receipt of a transit fare: the label of the rules that priced the ride.
    pub fare_rules_label: &'static str,
    /// The fare rules' words as `domain::fares::Rule::describe` writes them, translated.
    pub fare_rules: &'static [(&'static str, &'static str)],
    /// Verification: heading.
    pub verify_heading: &'static str,
    /// Verification: what happens.
    pub verify_intro: &'static str,
    /// Without JavaScript.
    pub verify_nojs: &'static str,
    /// Verification messages for the script, by key.
    pub verify_msgs: &'static [(&'static str, &'static str)],
    /// Books: title.
    pub books_title: &'static str,
    /// Books: day picker label and button.
    pub books_day: (&'static str, &'static str),
    /// Books: summary labels: payments, paid, refunded, top-ups, access decisions.
    pub books_summary: [&'static str; 5],
    /// Books: headings: by category, by service, 30 days, the log.
    pub books_headings: [&'static str; 4],
    /// Books: table columns by category: category, payments, amount, refunded.
    pub books_category_columns: [&'static str; 4],
    /// Books: table columns by service: service, allowed, denied, reasons.
    pub books_service_columns: [&'static str; 4],
    /// Books: nothing that day.
    pub books_empty: &'static str,
    /// Books: the chart's description (`{n}` days).
    pub books_chart: &'static str,
    /// Books: log size, latest checkpoint, signed at, age in seconds, none yet.
    pub books_log: [&'static str; 5],
    /// Books: the check's button and intro.
    pub books_check: (&'static str, &'static str),
    /// Audit page: title and its paragraphs.
    pub audit_title: &'static str,
    /// Audit page: sections (heading, paragraph).
    pub audit_sections: [(&'static str, &'static str); 4],
    /// Audit page: labels: origin, public key, the script's hash, raw endpoints.
    pub audit_labels: [&'static str; 4],
}

impl Text {
    /// A name from one of the tables, else the name itself.
    pub fn name<'a>(table: &'static [(&'static str, &'static str)], key: &'a str) -> &'a str {
        table.iter().find(|(k, _)| *k == key).map_or(key, |(_, v)| v)
    }

    /// A ride's rules ("5 stops; transfer within 60 min") in this language.
    pub fn fare_rules(&self, rules: &str) -> String {
        self.fare_rules.iter().fold(rules.to_owned(), |text, (en, here)| text.replace(en, here))
    }
}

/// The texts in Bahasa Indonesia, the default.
pub const ID: Text = Text {
    language_name: "Bahasa Indonesia",
    site: "Kartu Kota",
    nav_label: "Navigasi",
    nav_books: "Buku kota",
    nav_audit: "Untuk auditor",
    footer: "Setiap pembayaran tercatat di buku besar kota yang tidak dapat diubah siapa pun.",
    card_title: "Kartu saya",
    card_hold: ("Tempelkan kartu ke ponsel", "Dekatkan Kartu Kota Anda ke ponsel: ponsel akan membuka halaman ini dengan saldo Anda."),
    card_used: ("Tautan ini sudah dipakai", "Tautan ini sudah dipakai — tempelkan kartu Anda ke ponsel lagi."),
    card_invalid: ("Bukan kartu asli", "Tautan ini tidak berasal dari Kartu Kota yang asli. Tempelkan kartu Anda ke ponsel lagi."),
    card_unknown: ("Kartu tidak terdaftar", "Kartu ini tidak terdaftar. Datanglah ke kantor layanan kota."),
    card_blocked: ("Kartu ini diblokir", "Kartu ini diblokir dan tidak dapat dipakai. Datanglah ke kantor layanan kota dengan KTP Anda untuk membuka blokir atau mengganti kartu; saldo Anda tetap aman."),
    card_replaced: ("Kartu ini sudah diganti", "Kartu ini sudah diganti dengan kartu baru yang memegang saldo Anda. Pakailah kartu yang baru."),
    card_outdated: ("Kartu tidak dikenali", "Kartu ini dibaca dengan kunci lama. Datanglah ke kantor layanan kota."),
    unavailable: ("Coba lagi sebentar", "Layanan sedang sibuk. Tempelkan kartu Anda lagi sebentar lagi."),
    balance: "Saldo",
    holder: "Pemegang",
    status: "Status",
    status_active: "Aktif",
    movements: "Transaksi terakhir",
    no_movements: "Belum ada transaksi.",
    columns: ["Waktu", "Di mana", "Jumlah", "Saldo setelahnya", "Struk"],
    receipt_link: "Struk",
    kinds: &[
        ("topup", "Isi saldo"),
        ("payment", "Pembayaran"),
        ("refund", "Pengembalian dana"),
        ("hold", "Dana ditahan"),
        ("capture", "Pembayaran dari dana ditahan"),
        ("void", "Penahanan dibatalkan"),
        ("transfer", "Transfer"),
        ("adjustment", "Koreksi"),
        ("settlement", "Penyelesaian"),
        ("card_replacement", "Penggantian kartu"),
    ],
    categories: &[
        ("grocery", "Toko dan pasar"),
        ("hotel", "Hotel"),
        ("restaurant", "Restoran"),
        ("hospital", "Rumah sakit"),
        ("parking", "Parkir"),
        ("transport", "Transportasi"),
        ("transit", "Angkutan umum"),
        ("other", "Lainnya"),
        ("clinic", "Puskesmas"),
        ("library", "Perpustakaan"),
        ("city_office", "Kantor kota"),
    ],
    reasons: &[
        ("card_blocked", "kartu diblokir"),
        ("not_entitled", "tidak berhak"),
        ("closed", "tutup"),
        ("passback", "sudah masuk"),
        ("quota_reached", "kuota habis"),
        ("bad_policy", "aturan rusak"),
    ],
    receipt_title: "Struk",
    receipt_missing: ("Struk tidak ditemukan", "Tidak ada struk di alamat ini. Periksa tautan pada struk Anda."),
    receipt_fields: ["Transaksi", "Jumlah", "Di mana", "Kapan", "Biaya merchant", "Entri buku", "Indeks daun", "Hash daun"],
    fare_rules_label: "Aturan tarif",
    fare_rules: &[
        ("no tap-off: maximum fare", "tanpa tap keluar: tarif maksimum"),
        ("flat fare", "tarif tetap"),
        (" stops", " halte"),
        ("transfer within", "transfer dalam"),
        (" min", " menit"),
        ("daily cap reached", "batas harian tercapai"),
        ("weekly cap reached", "batas mingguan tercapai"),
        ("student", "pelajar"),
        ("senior", "lansia"),
    ],
    verify_heading: "Verifikasi",
    verify_intro: "Browser Anda sendiri memeriksa struk ini terhadap buku kota yang ditandatangani: hash daun, bukti inklusi, dan tanda tangan.",
    verify_nojs: "Verifikasi memerlukan JavaScript. Anda juga dapat memeriksanya dengan `kartu audit verify`.",
    verify_msgs: &[
        ("checking", "Memeriksa…"),
        ("ok", "Terverifikasi: pembayaran ini adalah entri {n} dari buku kota, ditandatangani pada {t}."),
        ("pending", "Entri ini belum masuk ke titik periksa yang ditandatangani. Muat ulang halaman sebentar lagi."),
        ("leaf", "Gagal: isi struk tidak cocok dengan hash daunnya."),
        ("details", "Gagal: rincian yang ditampilkan berbeda dari isi daun."),
        ("key", "Gagal: kunci publik kota tidak dapat dibaca atau berbeda dari yang dipublikasikan."),
        ("signature", "Gagal: tanda tangan titik periksa tidak sah."),
        ("proof", "Gagal: bukti inklusi tidak menghasilkan akar yang ditandatangani."),
        ("network", "Tidak dapat mengambil bukti dari server. Coba lagi."),
        ("nocrypto", "Browser ini tidak mendukung Ed25519 di WebCrypto."),
        ("first", "Tercatat: buku kota berukuran {n}. Periksa lagi nanti."),
        ("extends", "Baik: buku berukuran {n} melanjutkan buku berukuran {m} yang Anda lihat sebelumnya; tidak ada yang diubah."),
        ("same", "Baik: buku masih berukuran {n}, sama seperti yang Anda lihat sebelumnya."),
        ("rollback", "Gagal: buku ini ({n}) lebih kecil dari yang Anda lihat sebelumnya ({m}): log telah diputar mundur."),
        ("fork", "Gagal: buku berukuran {n} berbeda dari yang Anda lihat sebelumnya pada ukuran yang sama."),
        ("consistency", "Gagal: bukti konsistensi tidak membuktikan bahwa buku baru melanjutkan yang lama."),
        ("keychanged", "Gagal: kunci tanda tangan berbeda dari yang Anda lihat sebelumnya."),
    ],
    books_title: "Buku kota",
    books_day: ("Hari", "Tampilkan"),
    books_summary: ["Pembayaran", "Dibayar", "Dikembalikan", "Isi saldo", "Keputusan akses"],
    books_headings: ["Per kategori merchant", "Per layanan publik", "30 hari terakhir", "Log audit"],
    books_category_columns: ["Kategori", "Pembayaran", "Jumlah", "Dikembalikan"],
    books_service_columns: ["Layanan", "Diizinkan", "Ditolak", "Alasan penolakan"],
    books_empty: "Tidak ada pada hari ini.",
    books_chart: "Jumlah pembayaran per hari selama {n} hari terakhir",
    books_log: ["Ukuran log", "Titik periksa terakhir", "ditandatangani pada", "detik yang lalu", "Belum ada titik periksa."],
    books_check: ("Periksa buku", "Browser Anda mengingat titik periksa terakhir yang dilihatnya dan memeriksa bahwa yang baru melanjutkannya."),
    audit_title: "Untuk auditor",
    audit_sections: [
        ("Apa yang dijamin", "Setiap entri buku besar dan setiap peristiwa adalah daun dari satu pohon Merkle (RFC 9162). Kota menandatangani akarnya setiap detik (C2SP signed note, Ed25519). Siapa pun yang memegang daun dapat menghitung ulang semuanya."),
        ("Verifikasi seluruh buku", "Jalankan `kartu audit verify --url <server> --token <token auditor>`: ia membaca setiap daun, memutar ulang buku, dan memeriksa setiap tanda tangan. Tanpa token, bukti inklusi dan konsistensi tetap terbuka untuk semua."),
        ("Saksi", "`kartu audit watch --url <server> --state <berkas>` menyimpan titik periksa terakhir yang terverifikasi dan memeriksa bahwa setiap titik periksa baru melanjutkannya. Alat RFC 9162 mana pun dapat melakukan hal yang sama."),
        ("Format", "Byte daun, tabel, dan format titik periksa dijelaskan di docs/AUDIT.md pada kode sumber Kartu."),
    ],
    audit_labels: [
        "Origin log",
        "Kunci publik (baris verifier)",
        "SHA-256 skrip verifikasi (/assets/kartu.js, sama dengan kode sumber)",
        "Endpoint mentah",
    ],
};

/// The texts in English.
pub const EN: Text = Text {
    language_name: "English",
    site: "City Card",
    nav_label: "Navigation",
    nav_books: "The city's books",
    nav_audit: "For auditors",
    footer: "Every payment lands in the city's ledger, which nobody can edit.",
    card_title: "My card",
    card_hold: ("Hold your card to the phone", "Hold your City Card to your phone: the phone opens this page with your balance."),
    card_used: ("This link was already used", "This link was already used — hold your card to the phone again."),
    card_invalid: ("Not a genuine card", "This link does not come from a genuine City Card. Hold your card to the phone again."),
    card_unknown: ("Card not registered", "This card is not registered. Please visit a city service office."),
    card_blocked: ("This card is blocked", "This card is blocked and cannot be used. Go to a city service office with your ID card to unblock or replace it; your balance is safe."),
    card_replaced: ("This card was replaced", "This card was replaced by a new card, which holds your balance. Please use the new card."),
    card_outdated: ("Card not recognised", "This card was read with old keys. Please visit a city service office."),
    unavailable: ("Try again in a moment", "The service is busy. Hold your card to the phone again in a moment."),
    balance: "Balance",
    holder: "Holder",
    status: "Status",
    status_active: "Active",
    movements: "Last movements",
    no_movements: "No movements yet.",
    columns: ["Time", "Where", "Amount", "Balance after", "Receipt"],
    receipt_link: "Receipt",
    kinds: &[
        ("topup", "Top-up"),
        ("payment", "Payment"),
        ("refund", "Refund"),
        ("hold", "Funds held"),
        ("capture", "Payment from held funds"),
        ("void", "Hold released"),
        ("transfer", "Transfer"),
        ("adjustment", "Correction"),
        ("settlement", "Settlement"),
        ("card_replacement", "Card replacement"),
    ],
    categories: &[
        ("grocery", "Shops and markets"),
        ("hotel", "Hotels"),
        ("restaurant", "Restaurants"),
        ("hospital", "Hospitals"),
        ("parking", "Parking"),
        ("transport", "Transport"),
        ("transit", "Public transport"),
        ("other", "Other"),
        ("clinic", "Clinics"),
        ("library", "Libraries"),
        ("city_office", "City offices"),
    ],
    reasons: &[
        ("card_blocked", "card blocked"),
        ("not_entitled", "not entitled"),
        ("closed", "closed"),
        ("passback", "already inside"),
        ("quota_reached", "quota reached"),
        ("bad_policy", "broken policy"),
    ],
    receipt_title: "Receipt",
    receipt_missing: ("Receipt not found", "There is no receipt at this address. Check the link on your receipt."),
    receipt_fields: ["Transaction", "Amount", "Where", "When", "Merchant fee", "Ledger entry", "Leaf index", "Leaf hash"],
    fare_rules_label: "Fare rules",
    fare_rules: &[],
    verify_heading: "Verification",
    verify_intro: "Your own browser checks this receipt against the city's signed books: the leaf hash, the inclusion proof and the signature.",
    verify_nojs: "Verification needs JavaScript. You can also check it with `kartu audit verify`.",
    verify_msgs: &[
        ("checking", "Checking…"),
        ("ok", "Verified: this payment is entry {n} of the city's books, signed at {t}."),
        ("pending", "This entry is not in a signed checkpoint yet. Reload the page in a moment."),
        ("leaf", "Failed: the receipt's bytes do not match its leaf hash."),
        ("details", "Failed: the details shown differ from the leaf's bytes."),
        ("key", "Failed: the city's public key cannot be read or differs from the published one."),
        ("signature", "Failed: the checkpoint's signature is not valid."),
        ("proof", "Failed: the inclusion proof does not lead to the signed root."),
        ("network", "Could not fetch the proofs from the server. Try again."),
        ("nocrypto", "This browser does not support Ed25519 in WebCrypto."),
        ("first", "Remembered: the city's books at size {n}. Check again later."),
        ("extends", "Good: the books at size {n} extend the books at size {m} you saw before; nothing was changed."),
        ("same", "Good: the books are still at size {n}, as you saw before."),
        ("rollback", "Failed: these books ({n}) are smaller than the ones you saw before ({m}): the log was rolled back."),
        ("fork", "Failed: the books at size {n} differ from the ones you saw before at the same size."),
        ("consistency", "Failed: the consistency proof does not prove that the new books extend the old ones."),
        ("keychanged", "Failed: the signing key differs from the one you saw before."),
    ],
    books_title: "The city's books",
    books_day: ("Day", "Show"),
    books_summary: ["Payments", "Paid", "Refunded", "Top-ups", "Access decisions"],
    books_headings: ["By merchant category", "By public service", "The last 30 days", "The audit log"],
    books_category_columns: ["Category", "Payments", "Amount", "Refunded"],
    books_service_columns: ["Service", "Allowed", "Denied", "Reasons denied"],
    books_empty: "Nothing on this day.",
    books_chart: "Amount paid per day over the last {n} days",
    books_log: ["Log size", "Latest checkpoint", "signed at", "seconds ago", "No checkpoint yet."],
    books_check: ("Check the books", "Your browser remembers the last checkpoint it saw and checks that the new one extends it."),
    audit_title: "For auditors",
    audit_sections: [
        ("What is guaranteed", "Every ledger entry and every event is a leaf of one Merkle tree (RFC 9162). The city signs its root every second (a C2SP signed note, Ed25519). Anyone holding the leaves can recompute all of it."),
        ("Verify the whole books", "Run `kartu audit verify --url <server> --token <auditor token>`: it reads every leaf, replays the books and checks every signature. Without a token, inclusion and consistency proofs are open to everyone."),
        ("Witnesses", "`kartu audit watch --url <server> --state <file>` keeps the last verified checkpoint and checks that each new one extends it. Any RFC 9162 tool can do the same."),
        ("Formats", "The leaf bytes, the tables and the checkpoint format are in docs/AUDIT.md of Kartu's source."),
    ],
    audit_labels: [
        "Log origin",
        "Public key (verifier line)",
        "SHA-256 of the verification script (/assets/kartu.js, as in the source)",
        "Raw endpoints",
    ],
};

#[cfg(test)]
mod tests {
    use super::*;

    /// The messages `kartu.js` shows, by key.
    const MESSAGE_KEYS: [&[&str]; 2] = [
        &["checking", "ok", "pending", "leaf", "details", "key", "signature", "proof", "network", "nocrypto"],
        &["first", "extends", "same", "rollback", "fork", "consistency", "keychanged"],
    ];

    #[test]
    fn both_languages_have_every_message() {
        for t in [&ID, &EN] {
            let keys: Vec<&str> = t.verify_msgs.iter().map(|(k, _)| *k).collect();
            let expected: Vec<&str> = MESSAGE_KEYS.iter().flat_map(|k| k.iter().copied()).collect();
            assert_eq!(keys, expected, "{}", t.language_name);
            assert_eq!(t.kinds.len(), ledger::domain::EntryKind::ALL.len(), "{}", t.language_name);
            for k in ledger::domain::EntryKind::ALL {
                assert_ne!(Text::name(t.kinds, k.as_str()), k.as_str(), "{} has no name for {k:?}", t.language_name);
            }
        }
    }

    /// Every message key `kartu.js` shows (`Failure('…')`, `fail('…')`, `show(…, '…')`) is
    /// one the pages give.
    #[test]
    fn the_script_shows_only_known_messages() {
        let js = include_str!("../../assets/kartu.js");
        let known: Vec<&str> = MESSAGE_KEYS.iter().flat_map(|k| k.iter().copied()).collect();
        let mut used = Vec::new();
        for marker in ["new Failure('", "fail('", "', '"] {
            for (i, _) in js.match_indices(marker) {
                let rest = &js[i + marker.len()..];
                let key = &rest[..rest.find('\'').unwrap_or(0)];
                if !key.is_empty() && key.bytes().all(|b| b.is_ascii_lowercase()) {
                    used.push(key);
                }
            }
        }
        assert!(used.len() > 20, "{used:?}");
        for key in used {
            assert!(known.contains(&key) || ["ok", "failed", "checking", "pending"].contains(&key), "{key}");
        }
    }
}
