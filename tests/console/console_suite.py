"""The web console in a real headless Chromium (selenium): sign-in (a wrong secret refused),
browsing, a name that is markup shown as text, an upload of a file through the file picker (the
drop zone's code path; multipart above 16 MiB), object details, a word-count job submitted
from the form and its output on the live page, the cluster page, sign-out. A screenshot of each
page goes to $SHOTS. Prints "ok" at the end; any failed check raises.

Also: a failing task's stderr on its job's page; a new directory and bucket, an upload into the
bucket, a snaplink, a delete.

Environment: CONSOLE_URL (the gateway), ACCESS_KEY, SECRET, UPLOAD_FILE, SMALL_FILE, EXPECTED_WORDS,
EVIL_NAME, SHOTS; CHROMIUM and CHROMEDRIVER (defaults: Debian's).
"""

import os
import time

from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

base = os.environ["CONSOLE_URL"].rstrip("/")
shots = os.environ["SHOTS"]
os.makedirs(shots, exist_ok=True)

opts = webdriver.ChromeOptions()
opts.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
    opts.add_argument(a)
driver = webdriver.Chrome(
    service=Service(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")), options=opts
)
driver.set_page_load_timeout(60)


def shot(name):
    driver.save_screenshot(os.path.join(shots, name + ".png"))


def wait(check, what, secs=60):
    end = time.time() + secs
    while time.time() < end:
        try:
            if check():
                return
        except Exception:  # the page is reloading
            pass
        time.sleep(0.2)
    shot("failed")
    raise AssertionError("timed out waiting for " + what + "; page: " + driver.page_source[:3000])


def no_alert():
    try:
        driver.switch_to.alert
    except NoAlertPresentException:
        return True
    raise AssertionError("a script ran: an alert is open")


def listing():
    return [a.text for a in driver.find_elements(By.CSS_SELECTOR, "#listing a.name")]


def sign_in(key, secret):
    driver.get(base + "/console/login")
    driver.find_element(By.ID, "access_key").send_keys(key)
    driver.find_element(By.ID, "secret").send_keys(secret)
    driver.find_element(By.ID, "signin").click()


try:
    # Not signed in: every page sends to the sign-in form.
    driver.get(base + "/console/browse/admin/stor")
    assert driver.current_url.endswith("/console/login"), driver.current_url
    shot("login")
    sign_in(os.environ["ACCESS_KEY"], "not-the-secret")
    wait(lambda: "Wrong access key or secret" in driver.page_source, "the refusal")
    assert "/console/browse" not in driver.current_url
    shot("login-refused")

    sign_in(os.environ["ACCESS_KEY"], os.environ["SECRET"])
    wait(lambda: driver.current_url.endswith("/console/browse/admin/stor"), "the stor listing")
    names = [a.text for a in driver.find_elements(By.CSS_SELECTOR, "#listing a.name")]
    evil = os.environ["EVIL_NAME"]
    assert evil in names, names
    assert driver.find_elements(By.TAG_NAME, "img") == [], "markup in a name became an element"
    no_alert()
    shot("browse")

    # Upload through the file picker into /admin/stor/up.
    driver.get(base + "/console/browse/admin/stor/up")
    path = os.environ["UPLOAD_FILE"]
    name = os.path.basename(path)
    driver.find_element(By.ID, "files").send_keys(path)
    wait(
        lambda: name in [a.text for a in driver.find_elements(By.CSS_SELECTOR, "#listing a.name")],
        "the uploaded file in the listing",
        120,
    )
    shot("upload")
    driver.find_element(By.LINK_TEXT, name).click()
    wait(lambda: driver.find_elements(By.ID, "details"), "the object page")
    details = driver.find_element(By.ID, "details").text
    size = os.path.getsize(path)
    assert "(%d bytes)" % size in details, details
    assert "Copies on" in details, details
    shot("object")

    # A word count over /admin/stor/texts/, from the form, to its output on the live page.
    driver.get(base + "/console/jobs")
    driver.find_element(By.ID, "job-name").send_keys("console wc")
    driver.find_element(By.ID, "job-prefix").send_keys("/admin/stor/texts/")
    driver.find_element(By.ID, "job-map").send_keys("wc -w")
    driver.find_element(By.ID, "job-reduce").send_keys("awk '{s+=$1} END {print s}'")
    driver.find_element(By.ID, "job-submit").click()
    wait(lambda: "/console/jobs/" in driver.current_url, "the job page")
    wait(
        lambda: driver.find_element(By.ID, "state").get_attribute("data-state") == "done",
        "the job to finish",
        120,
    )
    outputs = [p.text.strip() for p in driver.find_elements(By.CSS_SELECTOR, "pre.output")]
    assert outputs == [os.environ["EXPECTED_WORDS"]], outputs
    shot("job")

    # A failing task: its error record with the task's stderr shown inline.
    driver.get(base + "/console/jobs")
    driver.find_element(By.ID, "job-prefix").send_keys("/admin/stor/texts/t0")
    driver.find_element(By.ID, "job-map").send_keys("echo oops-on-stderr >&2; exit 3")
    driver.find_element(By.ID, "job-submit").click()
    wait(lambda: "/console/jobs/" in driver.current_url, "the failing job's page")
    wait(
        lambda: driver.find_element(By.ID, "state").get_attribute("data-state") == "done",
        "the failing job to finish",
        120,
    )
    stderr = [p.text for p in driver.find_elements(By.CSS_SELECTOR, "#errors pre.stderr")]
    assert any("oops-on-stderr" in t for t in stderr), driver.page_source[:3000]
    shot("job-error")

    # A new directory, a new bucket, a key uploaded into it, a snaplink, a delete.
    driver.get(base + "/console/browse/admin/stor")
    driver.find_element(By.ID, "new-name").send_keys("made-here")
    driver.find_element(By.ID, "new").click()
    wait(lambda: "made-here" in listing(), "the new directory")
    driver.get(base + "/console/browse/admin/buckets")
    driver.find_element(By.ID, "new-name").send_keys("console-bucket")
    driver.find_element(By.ID, "new").click()
    wait(lambda: "console-bucket" in listing(), "the new bucket")
    driver.find_element(By.LINK_TEXT, "console-bucket").click()
    wait(lambda: driver.find_elements(By.ID, "files"), "the bucket page")
    driver.find_element(By.ID, "files").send_keys(os.environ["SMALL_FILE"])
    small = os.path.basename(os.environ["SMALL_FILE"])
    wait(lambda: small in listing(), "the key in the bucket", 60)
    shot("bucket")
    driver.get(base + "/console/browse/admin/stor/texts/t1")
    driver.find_element(By.ID, "link-to").send_keys("/admin/stor/linked-t1")
    driver.find_element(By.ID, "snaplink").click()
    wait(lambda: driver.current_url.endswith("/console/browse/admin/stor/linked-t1"), "the link")
    assert driver.find_elements(By.ID, "details")
    driver.find_element(By.CSS_SELECTOR, "button.delete").click()
    wait(lambda: driver.current_url.endswith("/console/browse/admin/stor"), "the parent")
    wait(lambda: "linked-t1" not in listing() and "made-here" in listing(), "the link gone")

    driver.get(base + "/console/cluster")
    nodes = driver.find_elements(By.CSS_SELECTOR, "#nodes tr.node")
    assert len(nodes) == 3, driver.page_source[:2000]
    assert all("healthy" in n.text for n in nodes)
    assert driver.find_elements(By.CSS_SELECTOR, "figure.chart svg")
    shot("cluster")

    # Sign out: the session is gone from the browser.
    driver.find_element(By.ID, "signout").click()
    wait(lambda: driver.current_url.endswith("/console/login"), "the sign-in page")
    driver.get(base + "/console/browse/admin/stor")
    assert driver.current_url.endswith("/console/login"), driver.current_url
    no_alert()
    print("ok")
finally:
    driver.quit()
