// Renders template cases with Go's text/template, the reference engine for choreo's
// gotemplate reconcilers (its differential test). Standard library only: `go run gotemplate.go`.
//
// Input (stdin): a JSON array of {"files": {"main.tpl": "...", ...}, "data": {...}}.
// Output (stdout): a JSON array of {"output": "..."} or {"error": "..."}, in order.
//
// Numbers are decoded as choreo gives them to templates: integers as int64, others as
// float64 (upstream choreo hands every number over as float64; README lists the difference).
package main

import (
	"encoding/json"
	"os"
	"sort"
	"strings"
	"text/template"
)

type testCase struct {
	Files map[string]string `json:"files"`
	Data  json.RawMessage   `json:"data"`
}

type result struct {
	Output *string `json:"output,omitempty"`
	Error  *string `json:"error,omitempty"`
}

func numbers(v interface{}) interface{} {
	switch x := v.(type) {
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		f, _ := x.Float64()
		return f
	case map[string]interface{}:
		for k, e := range x {
			x[k] = numbers(e)
		}
		return x
	case []interface{}:
		for i, e := range x {
			x[i] = numbers(e)
		}
		return x
	}
	return v
}

func render(c testCase) (string, error) {
	dec := json.NewDecoder(strings.NewReader(string(c.Data)))
	dec.UseNumber()
	var data interface{}
	if err := dec.Decode(&data); err != nil {
		return "", err
	}
	data = numbers(data)
	// As choreo: helpers first (sorted by name), main.tpl last, all in one set.
	names := make([]string, 0, len(c.Files))
	for n := range c.Files {
		if n != "main.tpl" {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	set := template.New("main.tpl")
	for _, n := range names {
		if _, err := set.New(n).Parse(c.Files[n]); err != nil {
			return "", err
		}
	}
	if _, err := set.New("main.tpl").Parse(c.Files["main.tpl"]); err != nil {
		return "", err
	}
	var out strings.Builder
	if err := set.ExecuteTemplate(&out, "main.tpl", data); err != nil {
		return "", err
	}
	return out.String(), nil
}

func main() {
	var cases []testCase
	if err := json.NewDecoder(os.Stdin).Decode(&cases); err != nil {
		os.Stderr.WriteString("cannot read the cases: " + err.Error() + "\n")
		os.Exit(2)
	}
	results := make([]result, len(cases))
	for i, c := range cases {
		out, err := render(c)
		if err != nil {
			msg := err.Error()
			results[i].Error = &msg
		} else {
			results[i].Output = &out
		}
	}
	if err := json.NewEncoder(os.Stdout).Encode(results); err != nil {
		os.Exit(2)
	}
}
