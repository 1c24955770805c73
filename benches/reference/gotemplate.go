// Times Go's text/template on one template set for benches/templates.rs: reads
// {"files": {...}, "data": {...}} on stdin, renders main.tpl `iterations` times (first
// argument) and prints the seconds taken. Standard library only: `go run gotemplate.go N`.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/template"
	"time"
)

func main() {
	n, err := strconv.Atoi(os.Args[1])
	if err != nil {
		panic(err)
	}
	var input struct {
		Files map[string]string `json:"files"`
		Data  json.RawMessage   `json:"data"`
	}
	if err := json.NewDecoder(os.Stdin).Decode(&input); err != nil {
		panic(err)
	}
	var data interface{}
	if err := json.Unmarshal(input.Data, &data); err != nil {
		panic(err)
	}
	names := make([]string, 0)
	for name := range input.Files {
		if name != "main.tpl" {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	set := template.New("main.tpl")
	for _, name := range append(names, "main.tpl") {
		if _, err := set.New(name).Parse(input.Files[name]); err != nil {
			panic(err)
		}
	}
	var out strings.Builder
	if err := set.ExecuteTemplate(&out, "main.tpl", data); err != nil {
		panic(err)
	}
	start := time.Now()
	for i := 0; i < n; i++ {
		if err := set.ExecuteTemplate(io.Discard, "main.tpl", data); err != nil {
			panic(err)
		}
	}
	fmt.Println(time.Since(start).Seconds())
}
