//! The selection rule on a table of contents shaped like pagila's (real `pg_restore --list
//! --verbose` lines, trimmed).

use super::*;

const LISTING: &str = "\
;
; Archive created at 2026-12-01 23:12:03 UTC
;
5; 2615 2200 SCHEMA - public postgres
891; 1247 16388 TYPE public mpaa_rating postgres
;\tdepends on: 5
275; 1255 16409 FUNCTION public last_updated() postgres
;\tdepends on: 5
214; 1259 16410 SEQUENCE public customer_customer_id_seq postgres
;\tdepends on: 5
215; 1259 16411 TABLE public customer postgres
;\tdepends on: 214 5
276; 1255 16420 FUNCTION public rewards_report(integer, numeric) postgres
;\tdepends on: 5 215
216; 1259 16422 SEQUENCE public actor_actor_id_seq postgres
;\tdepends on: 5
217; 1259 16423 TABLE public actor postgres
;\tdepends on: 216 5
220; 1259 16438 SEQUENCE public film_film_id_seq postgres
;\tdepends on: 5
221; 1259 16439 TABLE public film postgres
;\tdepends on: 220 891 5
222; 1259 16450 TABLE public film_actor postgres
;\tdepends on: 5
224; 1259 16458 VIEW public actor_info postgres
;\tdepends on: 222 221 217 5
235; 1259 16503 SEQUENCE public language_language_id_seq postgres
;\tdepends on: 5
236; 1259 16504 TABLE public language postgres
;\tdepends on: 235 5
300; 1259 16600 SEQUENCE public standalone_seq postgres
;\tdepends on: 5
239; 1259 16515 TABLE public payment postgres
;\tdepends on: 5
240; 1259 16521 TABLE public payment_p2022_01 postgres
;\tdepends on: 239 5
3345; 0 0 TABLE ATTACH public payment_p2022_01 postgres
;\tdepends on: 240 239
250; 1259 16530 TABLE public child postgres
;\tdepends on: 217 5
3682; 0 16423 TABLE DATA public actor postgres
;\tdepends on: 217
3680; 0 16411 TABLE DATA public customer postgres
;\tdepends on: 215
3686; 0 16439 TABLE DATA public film postgres
;\tdepends on: 221
3700; 0 16521 TABLE DATA public payment_p2022_01 postgres
;\tdepends on: 240
3721; 0 0 SEQUENCE SET public actor_actor_id_seq postgres
;\tdepends on: 216
3722; 0 0 SEQUENCE SET public customer_customer_id_seq postgres
;\tdepends on: 214
3399; 2606 16620 CONSTRAINT public actor actor_pkey postgres
;\tdepends on: 217
3405; 2606 16623 CONSTRAINT public film film_pkey postgres
;\tdepends on: 221
3426; 2606 16630 CONSTRAINT public language language_pkey postgres
;\tdepends on: 236
3411; 1259 16639 INDEX public idx_fk_film_id postgres
;\tdepends on: 222
3518; 2620 16675 TRIGGER public film last_updated postgres
;\tdepends on: 221 275
3482; 2606 16703 FK CONSTRAINT public film_actor film_actor_actor_id_fkey postgres
;\tdepends on: 222 3399 217
3483; 2606 16708 FK CONSTRAINT public film_actor film_actor_film_id_fkey postgres
;\tdepends on: 222 3405 221
3480; 2606 16723 FK CONSTRAINT public film film_language_id_fkey postgres
;\tdepends on: 221 3426 236
3530; 0 0 COMMENT public COLUMN film.title postgres
;\tdepends on: 221
3531; 0 0 ACL public TABLE customer postgres
;\tdepends on: 215
";

fn patterns(p: &[&str]) -> Vec<TablePattern> {
    p.iter().map(|p| TablePattern::parse(p).unwrap()).collect()
}

/// The ids the use-list restores (lines not commented out).
fn restored(s: &Selection) -> BTreeSet<u32> {
    s.list.lines().filter_map(toc::line_id).collect()
}

#[test]
fn keeps_the_tables_and_what_depends_only_on_them() {
    let s = select(
        LISTING,
        &patterns(&["public.film", "public.actor", "film_actor"]),
    )
    .unwrap();
    assert_eq!(
        s.tables,
        vec![
            "\"public\".\"actor\"",
            "\"public\".\"film\"",
            "\"public\".\"film_actor\""
        ]
    );
    let got = restored(&s);
    let want: BTreeSet<u32> = [
        5, 891, 275, 216, 217, 220, 221, 222, 224, 300, 3682, 3686, 3721, 3399, 3405, 3411, 3518,
        3482, 3483, 3530,
    ]
    .into();
    assert_eq!(got, want, "restored entries");
    // The key to language (not selected) is left out and named.
    assert_eq!(
        s.foreign_keys_left_out,
        vec![LeftOutKey {
            table: "\"public\".\"film\"".into(),
            constraint: "film_language_id_fkey".into(),
            references: vec!["\"public\".\"language\"".into()],
        }]
    );
    // rewards_report returns SETOF customer: left out with customer, and named.
    assert_eq!(
        s.dependents_left_out,
        vec!["FUNCTION public rewards_report(integer, numeric)".to_string()]
    );
    // Every entry stays in the list, in order; the others are commented out.
    assert_eq!(s.list.lines().count(), LISTING.lines().count());
    assert!(
        s.list
            .contains("\n;3680; 0 16411 TABLE DATA public customer postgres\n")
    );
}

#[test]
fn the_view_over_restored_tables_only_is_kept_and_sequences_follow_their_tables() {
    let s = select(LISTING, &patterns(&["public.language"])).unwrap();
    let got = restored(&s);
    assert!(got.contains(&236) && got.contains(&235) && got.contains(&3426));
    // Sequences of tables left out are left out; a sequence no table uses is kept.
    assert!(!got.contains(&214) && !got.contains(&3722) && !got.contains(&216));
    assert!(got.contains(&300));
    // The view needs tables left out.
    assert!(!got.contains(&224));
    assert!(
        s.dependents_left_out
            .iter()
            .any(|d| d == "VIEW public actor_info")
    );
    // No key of language's own is left out: the film key belongs to film, not restored.
    assert!(
        s.foreign_keys_left_out.is_empty(),
        "{:?}",
        s.foreign_keys_left_out
    );
}

#[test]
fn a_partitioned_table_brings_its_partitions() {
    let s = select(LISTING, &patterns(&["public.payment"])).unwrap();
    assert_eq!(
        s.tables,
        vec!["\"public\".\"payment\"", "\"public\".\"payment_p2022_01\""]
    );
    let got = restored(&s);
    assert!(got.contains(&3345) && got.contains(&3700));
}

#[test]
fn patterns_matching_nothing_and_missing_parents_are_refused() {
    let e = select(LISTING, &patterns(&["public.film", "nosuch*", "x.y"])).unwrap_err();
    assert_eq!(e, "no table of the backup matches --tables nosuch*,x.y");
    let e = select(LISTING, &patterns(&["public.child"])).unwrap_err();
    assert!(
        e.contains("table \"public\".\"child\" needs \"public\".\"actor\""),
        "{e}"
    );
    // A partition alone needs its parent.
    let e = select(LISTING, &patterns(&["payment_p2022_01"])).unwrap_err();
    assert!(e.contains("needs \"public\".\"payment\""), "{e}");
}

#[test]
fn names_with_spaces_are_matched_on_every_reading() {
    let listing = "\
5; 2615 2200 SCHEMA - my schema postgres
10; 1259 1 TABLE my schema odd name postgres
;\tdepends on: 5
";
    let s = select(listing, &patterns(&["\"my schema\".\"odd name\""])).unwrap();
    assert_eq!(s.tables, vec!["\"my schema\".\"odd name\""]);
    let s = select(listing, &patterns(&["\"my\".\"schema odd name\""])).unwrap();
    assert_eq!(s.tables, vec!["\"my\".\"schema odd name\""]);
}

#[test]
fn an_entry_of_a_restored_table_that_uses_something_left_out_is_named() {
    // A trigger on film calling a function over customer (not restored).
    let listing = format!(
        "{LISTING}3519; 2620 16676 TRIGGER public film rewards_on_film postgres\n;\tdepends on: 221 276\n"
    );
    let s = select(
        &listing,
        &patterns(&["public.film", "public.actor", "film_actor"]),
    )
    .unwrap();
    assert!(!restored(&s).contains(&3519));
    assert!(restored(&s).contains(&3518), "the other trigger stays");
    assert_eq!(
        s.dependents_left_out,
        vec![
            "FUNCTION public rewards_report(integer, numeric)".to_string(),
            "TRIGGER public film rewards_on_film".to_string(),
        ]
    );
}
