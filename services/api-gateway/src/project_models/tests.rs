use super::*;
use crate::agent_events::test_events::{assert_named_as_columns, at};
use stratavore_events::project::{
    ProjectArchiveChanged, ProjectCommandRejected, ProjectCreated, ProjectUpdated,
};
use uuid::Uuid;

fn fact(s: i64, event: ProjectEvent) -> ProjectFact {
    ProjectFact { time: at(s), event }
}

fn created(s: i64, path: &str) -> ProjectFact {
    fact(
        s,
        ProjectEvent::Created(ProjectCreated {
            command_id: Uuid::from_u128(2),
            name: "web".into(),
            path: path.into(),
            description: None,
            tags: vec!["a".into()],
            max_concurrent_runners: 3,
        }),
    )
}

fn updated(s: i64) -> ProjectFact {
    fact(
        s,
        ProjectEvent::Updated(ProjectUpdated {
            command_id: Uuid::now_v7(),
            name: "web".into(),
            description: Some("the site".into()),
            tags: vec!["b".into(), "c".into()],
            max_concurrent_runners: 7,
        }),
    )
}

fn archive(s: i64, archived: bool) -> ProjectFact {
    let e = ProjectArchiveChanged {
        command_id: Uuid::now_v7(),
        name: "web".into(),
    };
    fact(
        s,
        if archived {
            ProjectEvent::Archived(e)
        } else {
            ProjectEvent::Unarchived(e)
        },
    )
}

fn folded(facts: &[ProjectFact]) -> Option<ProjectRow> {
    let mut row = None;
    for f in facts {
        ProjectRow::fold(&mut row, f);
    }
    row
}

#[test]
fn changes_before_the_creation_change_nothing_and_after_it_change_the_row() {
    assert_eq!(folded(&[updated(1), archive(2, true)]), None);
    let row = folded(&[created(1, "/srv/web"), updated(2), archive(3, true)]).unwrap();
    assert_eq!(row.description.as_deref(), Some("the site"));
    assert_eq!(row.tags, vec!["b".to_owned(), "c".to_owned()]);
    assert_eq!(row.max_concurrent_runners, 7);
    assert!(row.archived);
    assert_eq!((row.created_at, row.updated_at), (at(1), at(3)));
    let row = folded(&[created(1, "/srv/web"), archive(3, true), archive(4, false)]).unwrap();
    assert!(!row.archived);
    assert_eq!(row.updated_at, at(4));
}

#[test]
fn a_creation_remakes_the_row_whole() {
    let row = folded(&[
        created(1, "/srv/web"),
        archive(2, true),
        created(5, "/srv/web2"),
    ])
    .unwrap();
    assert_eq!(row.path, "/srv/web2");
    assert!(!row.archived);
    assert_eq!(row.description, None);
    assert_eq!((row.created_at, row.updated_at), (at(5), at(5)));
}

#[test]
fn every_change_and_rejection_decides_its_command_and_an_admission_none() {
    let rejected = fact(
        3,
        ProjectEvent::Rejected(ProjectCommandRejected {
            command_id: Uuid::from_u128(1),
            name: "web".into(),
            reason: "name_taken".into(),
            field: Some("name".into()),
            message: "taken".into(),
        }),
    );
    assert_eq!(
        rejected.outcome(),
        Some(Outcome::new(
            Uuid::from_u128(1),
            at(3),
            Some(("name_taken", Some("name"), "taken")),
            None
        ))
    );
    assert_eq!(rejected.project(), None, "a rejection changes no project");
    assert_eq!(
        created(1, "/p").outcome(),
        Some(Outcome::new(
            Uuid::from_u128(2),
            at(1),
            None,
            Some("/api/v1/projects/web".into())
        ))
    );
    assert_eq!(created(1, "/p").project(), Some("web"));
}

#[test]
fn a_row_is_named_as_the_tables_columns() {
    assert_named_as_columns(&folded(&[created(1, "/srv/web")]).unwrap(), COLUMNS);
}
