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

func TestDocumentCarriesKind(t *testing.T) {
	var b bytes.Buffer
	doc := struct {
		TypeMeta `json:",inline"`
		X        int `json:"x"`
	}{Meta("ShowReport"), 1}
	if err := Document(&b, YAML, doc); err != nil {
		t.Fatal(err)
	}
	if want := "apiVersion: mcnet.io/v1alpha1\nkind: ShowReport\nx: 1\n"; b.String() != want {
		t.Errorf("got %q, want %q", b.String(), want)
	}
	if ValidateFormat("xml") == nil || ValidateFormat("table") != nil {
		t.Error("ValidateFormat accepts xml or rejects table")
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
