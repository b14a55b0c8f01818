package output

import (
	"bytes"
	"strings"
	"testing"
)

func TestStyleForPipeAndNoColor(t *testing.T) {
	var b bytes.Buffer
	if st := StyleFor(&b, func(string) string { return "" }); st.Fancy {
		t.Error("a buffer is not a terminal: want plain style")
	}
	if !NoColor(func(k string) string { return map[string]string{"NO_COLOR": "1"}[k] }) {
		t.Error("NO_COLOR=1 not honoured")
	}
	plain := Style{}
	for r, want := range map[string]string{"ok": "[ok]", "fail": "[FAIL]", "warn": "[warn]", "skip": "[skip]"} {
		if got := plain.Mark(r); !strings.HasPrefix(got, want) || strings.Contains(got, "\x1b") {
			t.Errorf("plain Mark(%s) = %q, want %q without escapes", r, got, want)
		}
	}
	if got := (Style{Fancy: true}).Mark("fail"); !strings.Contains(got, "\x1b[31m") {
		t.Errorf("fancy Mark(fail) = %q, want red", got)
	}
}

func TestDeepCopyJSONIsDeep(t *testing.T) {
	type doc struct {
		TypeMeta `json:",inline"`
		Items    []string          `json:"items"`
		Labels   map[string]string `json:"labels"`
	}
	in := &doc{TypeMeta: Meta("ShowReport"), Items: []string{"a"}, Labels: map[string]string{"k": "v"}}
	out := DeepCopyJSON(in)
	out.Items[0], out.Labels["k"] = "changed", "changed"
	if in.Items[0] != "a" || in.Labels["k"] != "v" || out.Kind != "ShowReport" || out.APIVersion != APIVersion {
		t.Errorf("copy shares memory or lost the kind: in %+v, out %+v", in, out)
	}
}

func TestSpinnerSilentOffTerminal(t *testing.T) {
	var b bytes.Buffer
	s := StartSpinner(&b, func(string) string { return "" }, "working")
	s.Stop()
	s.Stop()
	if b.Len() != 0 {
		t.Errorf("spinner wrote %q to a non-terminal", b.String())
	}
}
