{{- define "galaxy-ipam.name" -}}
galaxy-ipam
{{- end -}}

{{- define "galaxy-ipam.labels" -}}
app.kubernetes.io/name: galaxy-ipam
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "galaxy-ipam.selectorLabels" -}}
app.kubernetes.io/name: galaxy-ipam
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "galaxy-ipam.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
