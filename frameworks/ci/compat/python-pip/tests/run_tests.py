"""Runs the unit tests and writes a JUnit XML report to the path given."""
import os
import sys
import unittest
import xml.etree.ElementTree as ET

sys.path.insert(0, ".")
import app  # noqa: E402


class AppTests(unittest.TestCase):
    def test_slugify(self):
        self.assertEqual(app.slugify("Hello World"), "hello-world")

    def test_add(self):
        self.assertEqual(app.add(2, 3), 5)

    def test_add_negative(self):
        # INTEGRATION=1 checks against a value the app does not return, so
        # the integration job has a failing test to report.
        expected = 2 if os.environ.get("INTEGRATION") == "1" else 1
        self.assertEqual(app.add(-2, 3), expected)

    @unittest.skip("needs a database")
    def test_database(self):
        pass


class Recorder(unittest.TextTestResult):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.cases = []

    def addSuccess(self, test):
        super().addSuccess(test)
        self.cases.append((test, None))

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self.cases.append((test, ("failure", str(err[1]))))

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self.cases.append((test, ("skipped", reason)))


def main():
    suite = unittest.defaultTestLoader.loadTestsFromTestCase(AppTests)
    result = unittest.TextTestRunner(resultclass=Recorder, verbosity=2).run(suite)
    failures = sum(1 for _, o in result.cases if o and o[0] == "failure")
    skipped = sum(1 for _, o in result.cases if o and o[0] == "skipped")
    root = ET.Element("testsuites")
    suite_el = ET.SubElement(root, "testsuite", name="app", tests=str(len(result.cases)),
                             failures=str(failures), skipped=str(skipped), errors="0")
    for test, outcome in result.cases:
        case = ET.SubElement(suite_el, "testcase", classname="tests.AppTests",
                             name=test._testMethodName)
        if outcome:
            ET.SubElement(case, outcome[0], message=outcome[1])
    ET.ElementTree(root).write(sys.argv[1], encoding="utf-8", xml_declaration=True)
    sys.exit(0 if result.wasSuccessful() else 1)


main()
