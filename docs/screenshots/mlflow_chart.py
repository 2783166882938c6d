"""Screenshot the MLflow UI's chart view of a study: amplitude SSIM against dose, one line per arm.

First the first view, with no click: what the experiment's plain address shows a newcomer
(``mlflow_first_view_plain.png``) and what the link ``make ui`` prints shows
(``mlflow_first_view.png``), checked to be the Model training chart view grouped by arm with
its dose-response section (docs/tracking.md). Then the UI's own controls, clicked in a headless
Chromium:

    make ui &                                            # or: mlflow ui --backend-store-uri ...
    python docs/screenshots/mlflow_chart.py --url http://127.0.0.1:5000 --experiment quickstart

Needs ``pip install playwright`` and a Chromium (``apt-get install chromium``); neither is a
project dependency: this is a documentation tool, not part of a study.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent


def experiment_id(url: str, name: str) -> str:
    """The id of experiment ``name`` from the server's REST API."""
    query = f"{url}/ajax-api/2.0/mlflow/experiments/get-by-name?experiment_name={name}"
    with urllib.request.urlopen(query, timeout=30) as response:
        return json.load(response)["experiment"]["experiment_id"]


def first_view(page, url: str, identifier: str, out: str) -> None:
    """The picture a newcomer gets with no click: the plain address, then the link."""
    page.goto(f"{url}/#/experiments/{identifier}")
    page.wait_for_timeout(7000)
    page.screenshot(path=out.replace("mlflow_chart_view", "mlflow_first_view_plain"))
    link = (f"{url}/#/experiments/{identifier}/runs?workflowType=machine_learning"
            "&compareRunsMode=CHART&viewStateShareKey=dose-response")
    page.goto(link)
    page.wait_for_timeout(8000)
    page.screenshot(path=out.replace("mlflow_chart_view", "mlflow_first_view"))
    text = page.locator("body").inner_text()
    missing = [want for want in ("Group by: arm", "Dose response", "vs_dose/")
               if want not in text]
    if missing or "workflowType=machine_learning" not in page.url:
        raise SystemExit(f"the link's first view is not the dose-response view: {missing}, "
                         f"{page.url}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:5000")
    parser.add_argument("--experiment", default="quickstart")
    parser.add_argument("--metric", default="vs_dose/amp_ssim")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--out", default=str(HERE / "mlflow_chart_view.png"))
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    identifier = experiment_id(args.url, args.experiment)
    runs = (f"{args.url}/#/experiments/{identifier}/runs"
            "?workflowType=machine_learning&compareRunsMode=CHART")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=args.chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        fresh = browser.new_context(viewport={"width": 1600, "height": 1000})  # no UI state
        first_view(fresh.new_page(), args.url, identifier, args.out)
        fresh.close()
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(runs)
        page.wait_for_timeout(6000)
        assistant = page.get_by_role("button", name="Close")
        if assistant.count():
            assistant.first.click()  # the chat side panel: more room for the charts
        # 1. Group by the tag "arm": the children come out from under the sweep's parent, one
        #    group per arm, and each vs_dose/<metric> (logged at step = dose) becomes a line
        #    chart with one line per arm through the doses (min-max band over replicates)
        page.get_by_role("button", name="Group by").click()
        page.wait_for_timeout(1000)
        page.locator("[role=menu]").first.get_by_text("arm", exact=True).first.click()
        page.wait_for_timeout(800)
        page.keyboard.press("Escape")
        page.wait_for_timeout(2000)
        # 2. Only the dose-response charts
        page.get_by_placeholder("Search metric charts").fill("vs_dose/")
        page.wait_for_timeout(2000)
        page.screenshot(path=args.out)
        # 3. The amplitude SSIM chart with a logarithmic dose axis, full screen
        card = page.locator("[data-testid=draggable-chart-cards-grid] > div").filter(
            has_text=args.metric).first
        card.hover()
        card.get_by_role("button").last.click()  # the card's menu
        page.wait_for_timeout(800)
        page.locator("[role=menu]").last.get_by_text("Configure", exact=True).first.click()
        page.wait_for_timeout(1500)
        dialog = page.locator("[role=dialog]").first
        dialog.get_by_role("switch").first.click()  # the x axis's log scale
        page.wait_for_timeout(800)
        dialog.get_by_role("button", name="Save changes").click()
        page.wait_for_timeout(2000)
        card.hover()
        card.get_by_role("button").nth(-2).click()  # full screen
        page.wait_for_timeout(2500)
        page.screenshot(path=args.out.replace(".png", "_amp_ssim.png"))
        # 4. The runs table: the Dataset column says what each run saw
        page.keyboard.press("Escape")
        page.goto(runs.replace("compareRunsMode=CHART", "compareRunsMode=TABLE"))
        page.wait_for_timeout(5000)
        page.screenshot(path=args.out.replace(".png", "_table.png"))
        browser.close()
    print(f"screenshots: {args.out} and its _amp_ssim, _table variants; the first views")
    return 0


if __name__ == "__main__":
    sys.exit(main())
