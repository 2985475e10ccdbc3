// Command argocd-lua runs an Argo CD resource health script (health.lua) on the runtime Argo CD uses
// (runtime.go), so the script is tested on gopher-lua with Argo CD's libraries and globals, not on another Lua.
//
//	argocd-lua [-use-open-libs] test DIR    run DIR/health.lua over DIR/health_test.yaml (Argo CD's format:
//	                                        tests: - {healthStatus: {status, message}, inputPath}); one JSON line
//	                                        per test; exit 1 when any result differs from its expectation
//	argocd-lua [-use-open-libs] eval SCRIPT one object (YAML or JSON) on stdin; prints {"status","message"}
//
// Exit status 2: the arguments, a file, or the script itself (a Lua error) is wrong; the message says which.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"sigs.k8s.io/yaml"
)

// testFile is Argo CD's TestStructure (util/lua/health_test.go).
type testFile struct {
	Tests []struct {
		InputPath    string       `json:"inputPath"`
		HealthStatus HealthStatus `json:"healthStatus"`
	} `json:"tests"`
}

// result is one test's outcome, as the pytest wrapper reads it.
type result struct {
	InputPath string        `json:"inputPath"`
	Expected  HealthStatus  `json:"expected"`
	Actual    *HealthStatus `json:"actual,omitempty"`
	Error     string        `json:"error,omitempty"`
	OK        bool          `json:"ok"`
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "argocd-lua: "+format+"\n", args...)
	os.Exit(2)
}

// readObject: YAML or JSON to the map Argo CD's unstructured.Unstructured holds (sigs.k8s.io/yaml, as its test).
func readObject(data []byte, what string) map[string]any {
	obj := map[string]any{}
	if err := yaml.Unmarshal(data, &obj); err != nil {
		fail("%s is not a YAML/JSON object: %v", what, err)
	}
	return obj
}

func readFile(path string) []byte {
	data, err := os.ReadFile(path)
	if err != nil {
		fail("%v", err)
	}
	return data
}

func runTests(dir string, useOpenLibs bool) int {
	script := string(readFile(filepath.Join(dir, "health.lua")))
	var tests testFile
	if err := yaml.UnmarshalStrict(readFile(filepath.Join(dir, "health_test.yaml")), &tests); err != nil {
		fail("%s: %v (expected tests: - {healthStatus: {status, message}, inputPath})",
			filepath.Join(dir, "health_test.yaml"), err)
	}
	if len(tests.Tests) == 0 {
		fail("%s has no tests", filepath.Join(dir, "health_test.yaml"))
	}
	failed := 0
	out := json.NewEncoder(os.Stdout)
	for _, t := range tests.Tests {
		path := filepath.Join(dir, t.InputPath)
		r := result{InputPath: t.InputPath, Expected: t.HealthStatus}
		status, err := executeHealthLua(readObject(readFile(path), path), script, useOpenLibs)
		if err != nil {
			r.Error = err.Error()
		} else {
			r.Actual = status
			r.OK = *status == t.HealthStatus
		}
		if !r.OK {
			failed++
		}
		_ = out.Encode(r)
	}
	if failed > 0 {
		fmt.Fprintf(os.Stderr, "argocd-lua: %d of %d tests failed\n", failed, len(tests.Tests))
		return 1
	}
	return 0
}

func evalStdin(scriptPath string, useOpenLibs bool) int {
	data, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail("reading stdin: %v", err)
	}
	status, err := executeHealthLua(readObject(data, "stdin"), string(readFile(scriptPath)), useOpenLibs)
	if err != nil {
		fail("%s: %v", scriptPath, err)
	}
	_ = json.NewEncoder(os.Stdout).Encode(status)
	return 0
}

func main() {
	useOpenLibs := flag.Bool("use-open-libs", false, "open Lua's standard libraries too (string, math, ...), as "+
		"Argo CD does for its built-in scripts and for argocd-cm's resource.customizations.useOpenLibs.<group_kind>: "+
		"\"true\"; without it, what a plain argocd-cm health customization gets")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: argocd-lua [-use-open-libs] test DIR | eval SCRIPT < object.yaml\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 2 {
		flag.Usage()
		os.Exit(2)
	}
	switch flag.Arg(0) {
	case "test":
		os.Exit(runTests(flag.Arg(1), *useOpenLibs))
	case "eval":
		os.Exit(evalStdin(flag.Arg(1), *useOpenLibs))
	}
	fail("unknown command %q: use test DIR or eval SCRIPT", flag.Arg(0))
}
