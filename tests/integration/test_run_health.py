"""What a scheduler sees: exit status, one summary line per run, log lines naming the model, `runs`."""

from __future__ import annotations

import re

from dbt_harness import create_calls, items

FAST = {"wait_seconds": 60, "poll_interval_seconds": 0.05}


def test_every_request_failing_for_a_reason_no_retry_fixes_turns_the_run_red(project, emulator):
    project.load_table("items", items(10))
    # An unknown model let through the name check: every request comes back invalid.
    project.configure(replace=False, model="claude-haiku-9", extra_models=["claude-haiku-9"], **FAST)

    out = project.run(expect_ok=False).stdout

    assert "10 of the 10 requests this run harvested failed for a reason no retry fixes (10 invalid_request)" in out
    assert "over max_failure_ratio 0.5" in out
    assert len(project.failures()) == 10  # everything was recorded before the run failed
    assert project.query("select outcome, n_harvested, n_failed, starts_with(note, '10 of the 10 requests') "
                         "from dbt_claude_batch.runs order by started_at") == [("error", 10, 10, True)]


def test_a_few_retryable_failures_stay_green_and_are_resubmitted(project, emulator):
    emulator.add_scenario({"name": "result_errors", "rates": {"api_error": 0.3}, "times": 1})
    project.load_table("items", items(20))
    project.configure(replace=False, **FAST)

    out = project.run().stdout

    summary = next(line for line in out.splitlines() if "run summary:" in line)
    match = re.search(r"dbt_claude_batch main\.items_batch: run summary: 20 source rows, submitted 20, "
                      r"harvested 20 \((\d+) succeeded; failed: (\d+) errored\), reused 0, cost of this run \$0\.\d{4}",
                      summary)
    assert match and int(match.group(1)) + int(match.group(2)) == 20 and int(match.group(2)) > 0
    emulator.clear_scenarios()
    project.run()
    assert len(project.results()) == 20


def test_log_lines_name_the_model_without_an_adapter_prefix(project, emulator):
    project.load_table("items", items(3))
    project.configure(replace=False, **FAST)
    emulator.configure(processing_delay=4)  # seconds of emulated processing: the run waits and says how
    out = project.run().stdout
    assert re.search(r"waiting \d+s of wait_seconds, \d+s left; 1 batch\(es\) in flight: \w{8} 0/3 done, 0 failed, "
                     r"3 processing", out)
    project.load_table("items", items(6))
    out = project.run().stdout  # this model has a batch behind it: the wait aims at its turnaround
    assert re.search(r"expected to end in ~\d+s \(from this model's past batches\)", out)
    ours = [line for line in out.splitlines() if "dbt_claude_batch" in line and "Running with" not in line]
    assert ours and all("dbt_claude_batch main.items_batch: " in line for line in ours)
    assert not any("adapter:" in line for line in ours)
    log = (project.root / "logs" / "dbt.log").read_text()
    assert "dbt_claude_batch main.items_batch: submitted batch" in log


def test_runs_records_each_run_and_its_outcome(project, emulator):
    project.load_table("items", items(4))
    project.configure(replace=False, **FAST)
    project.run()
    project.run()
    project.configure(replace=False, model=123)
    project.run(expect_ok=False)  # a settings error: no state touched, no run recorded
    project.configure(replace=False, model="claude-haiku-4-5", max_cost_usd=0.0)
    project.load_table("items", items(5))
    project.run(expect_ok=False)
    rows = project.query("select outcome, n_source_rows, n_submitted, n_harvested, n_reused, cost_usd > 0, "
                         "note from dbt_claude_batch.runs order by started_at")
    assert rows[0][:6] == ("ok", 4, 4, 4, 0, True)
    assert rows[1][:6] == ("ok", 4, 0, 0, 0, False)
    assert rows[2][0] == "error" and rows[2][6].startswith("Estimated cost $")
    assert len(rows) == 3


def test_all_spend_matches_the_bill_to_the_cent_with_replaced_answers(project, emulator):
    rows = items(6)
    project.load_table("items", rows)
    project.configure(replace=False, **FAST)
    project.run()
    rows[0]["body"] = "edited, so its first answer is replaced"
    project.load_table("items", rows)
    emulator.configure(processing_delay=3600)
    project.configure(replace=False, wait_seconds=0)
    project.run()
    flagged = project.results()[1]
    assert flagged["newer_request_in_flight"] is True and flagged["attempt"] == 1  # old answer, about to change
    assert project.results()[2]["newer_request_in_flight"] is False
    emulator.advance_clock(3601)
    project.configure(replace=False, **FAST)
    project.run()

    billed = emulator.ledger(requests=False)["bill"]["total_usd"]
    spend = project.query("select sum(billed_usd) from dbt_claude_batch.all_spend")[0][0]
    held = project.query("select sum(cost_usd) from main.items_batch")[0][0]
    assert round(spend, 2) == round(billed, 2) and abs(spend - billed) < 1e-9
    assert held < billed  # the results table holds only the answers rows have now
    assert project.results()[1]["newer_request_in_flight"] is False and project.results()[1]["attempt"] == 2


def test_project_level_vars_count_and_rerun_keys_can_name_one_model(project, emulator):
    project.load_table("items", items(8))
    project.project_vars = {"claude_batch_sample": 3}
    project.configure(replace=False, **FAST)
    out = project.run().stdout
    assert len(project.rows_by_key("main.items_batch__sample")) == 3  # the sample var from dbt_project.yml
    assert create_calls(emulator) == 0

    project.project_vars = {}
    project.configure(replace=False)
    project.run()
    out = project.run(vars={"claude_batch_rerun_keys": {"other_model": [1], "items_batch": [2, 99]}}).stdout
    assert "claude_batch_rerun_keys names 1 key(s) the source does not have: 99; they are ignored" in out
    assert {k for k, r in project.results().items() if r["attempt"] == 2} == {2}


def test_all_spend_is_the_bill_with_sample_batch_and_sync_requests(project, emulator):
    project.load_table("items", items(6))
    project.configure(replace=False, **FAST)
    project.run(vars={"claude_batch_sample": 3})  # 3 synchronous calls: a preview, billed all the same
    sample_bill = emulator.ledger(requests=False)["bill"]["total_usd"]
    assert sample_bill > 0 and create_calls(emulator) == 0
    project.run()  # one batch of 6 rows and its marker request
    project.load_table("items", items(9))
    project.configure(replace=False, mode="sync")
    project.run()  # the 3 new rows through the Messages API

    bill = emulator.ledger(requests=False)["bill"]
    assert bill["sync_usd"] > sample_bill and bill["batch_usd"] > 0
    spend, requests = project.query("select sum(billed_usd), sum(requests_billed) from dbt_claude_batch.all_spend")[0]
    assert round(spend, 2) == round(bill["total_usd"], 2) and abs(spend - bill["total_usd"]) < 1e-9
    assert requests == 3 + 6 + 3  # the sample's, the batch's rows' and the synchronous ones (markers are no row's)
    run = project.query("select cost_usd from dbt_claude_batch.runs order by started_at limit 1")[0][0]
    assert abs(run - sample_bill) < 1e-9  # the sample run's own cost is in its runs row and summary
